"""RetryingStorage: which failures are transient, how calls wait out an outage, and how a tune
trial's reports wait in memory; without a database (a storage made to fail on demand)."""

import threading
import warnings

import pytest

from reglab.errors import ConfigError, StorageUnavailable


def _refused():
    """The error Optuna raises when PostgreSQL refuses the connection: its misleading
    StorageInternalError, raised from sqlalchemy's, raised from psycopg's."""
    import optuna
    import sqlalchemy

    driver = OSError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')
    try:
        try:
            raise sqlalchemy.exc.OperationalError("SELECT 1", {}, driver)
        except sqlalchemy.exc.OperationalError as exc:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. This typically happens due to "
                "invalid data in the commit, e.g. exceeding max length."
            ) from exc
    except optuna.exceptions.StorageInternalError as exc:
        return exc


class Flaky:
    """An in-memory Optuna storage that fails every call with ``error`` while ``down`` is
    more than 0 (each failure counts it down; -1: down for good)."""

    def __init__(self, error=None):
        import optuna

        self.inner = optuna.storages.InMemoryStorage()
        self.error = error or _refused()
        self.down = 0
        self.calls = 0
        self.beats = []

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def call(*args, **kwargs):
            self.calls += 1
            if self.down:
                self.down -= self.down > 0
                raise self.error
            return method(*args, **kwargs)

        return call

    def get_heartbeat_interval(self):
        return None

    def record_heartbeat(self, trial_id):
        if self.down:
            raise self.error
        self.beats.append(trial_id)


def _storage(flaky, retry=60.0):
    from reglab.lab.studies.retrying import RetryingStorage

    lines = []
    return RetryingStorage(flaky, "postgresql://ann:***@db/lab", retry, lines.append), lines


def test_transient_finds_a_refused_connection_under_optunas_error():
    from reglab.lab.studies.retrying import transient

    assert transient(_refused()) == "Connection refused"
    assert transient(ConnectionResetError("[Errno 104] Connection reset by peer")) == (
        "Connection reset"
    )
    assert transient(RuntimeError("FATAL: the database system is shutting down")) == (
        "the database system is shutting down"
    )
    assert transient(ValueError("value too long for type character varying(2048)")) is None
    assert transient(RuntimeError('FATAL: password authentication failed for "ann"')) is None


def test_retrying_storage_waits_out_failures_and_says_when_it_began_and_ended(monkeypatch):
    import reglab.lab.studies.retrying as retrying

    monkeypatch.setattr(retrying, "FIRST_PAUSE", 0.001)
    flaky = Flaky()
    storage, lines = _storage(flaky)
    study_id = storage.create_new_study([])
    flaky.down = 3
    assert storage.get_all_trials(study_id) == []
    assert flaky.calls == 2 + 3  # create, then three failures and the call that got through
    assert lines == [
        "the database postgresql://ann:***@db/lab cannot be reached (Connection refused); "
        "retrying for up to 60 s",
        "the database postgresql://ann:***@db/lab is back after 0 s",
    ]


def test_retrying_storage_raises_other_errors_at_once():
    flaky = Flaky(ValueError("exceeding max length"))
    storage, lines = _storage(flaky)
    flaky.down = 1
    with pytest.raises(ValueError, match="exceeding max length"):
        storage.get_all_studies()
    assert flaky.calls == 1 and lines == []


def test_retrying_storage_past_its_limit_raises_storage_unavailable_in_one_line(monkeypatch):
    import reglab.lab.studies.retrying as retrying

    monkeypatch.setattr(retrying, "FIRST_PAUSE", 0.001)
    flaky = Flaky()
    storage, _ = _storage(flaky, retry=0.05)
    flaky.down = -1
    with pytest.raises(StorageUnavailable) as info:
        storage.get_all_studies()
    assert str(info.value) == (
        "the database postgresql://ann:***@db/lab could not be reached for 0.05 s (Connection "
        "refused); every finished result is kept: rerun the same command to resume"
    )
    assert flaky.calls > 1


def test_retrying_storage_skips_a_heartbeat_it_cannot_send_and_never_waits_for_it():
    flaky = Flaky()
    storage, lines = _storage(flaky)
    flaky.down = -1
    storage.record_heartbeat(7)  # no error, no wait: the training it accompanies goes on
    flaky.down = 0
    storage.record_heartbeat(8)
    assert flaky.beats == [8] and lines == []


def test_retrying_storage_no_wait_raises_unreachable_at_once():
    from reglab.lab.studies.retrying import Unreachable

    flaky = Flaky()
    storage, lines = _storage(flaky)
    flaky.down = -1
    with storage.no_wait(), pytest.raises(Unreachable, match="Connection refused"):
        storage.get_all_studies()
    assert flaky.calls == 1 and lines == []


def test_retrying_storage_is_never_sent_to_another_process():
    import pickle

    storage, _ = _storage(Flaky())
    with pytest.raises(TypeError, match="send its URL"):
        pickle.dumps(storage)


def test_tune_reports_wait_in_memory_while_the_database_is_away_and_are_sent_once():
    import optuna

    from reglab.lab.studies.tune import Reports

    flaky = Flaky()
    storage, _ = _storage(flaky)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    reports = Reports(trial, pruning=True)
    flaky.down = -1
    assert reports.prune({"epoch": 1, "val_loss": 0.9}) is False  # trains on, no decision
    assert reports.waiting == [(1, 0.9)]
    flaky.down = 0
    reports.prune({"epoch": 2, "val_loss": 0.8})
    assert storage.get_trial(trial._trial_id).intermediate_values == {1: 0.9, 2: 0.8}
    # a resumed trial trains epoch 2 again: the step the storage holds is not reported twice
    again = Reports(optuna.Trial(study, trial._trial_id), pruning=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again.prune({"epoch": 2, "val_loss": 0.7})
        again.prune({"epoch": 3, "val_loss": 0.6})
    assert storage.get_trial(trial._trial_id).intermediate_values == {1: 0.9, 2: 0.8, 3: 0.6}


def test_heartbeat_grace_covers_the_outage_a_worker_waits_out(monkeypatch):
    from reglab.lab.studies.optuna_storage import GRACE_VARIABLE, heartbeat_timing

    monkeypatch.delenv(GRACE_VARIABLE, raising=False)
    assert heartbeat_timing(60.0) == (5, 80)
    assert heartbeat_timing(0.5) == (5, 21)
    monkeypatch.setenv(GRACE_VARIABLE, "3")
    assert heartbeat_timing(60.0) == (1, 3)
    monkeypatch.setenv(GRACE_VARIABLE, "soon")
    with pytest.raises(ConfigError, match="REGLAB_HEARTBEAT_GRACE' environment variable"):
        heartbeat_timing(60.0)


def test_compare_rejects_a_negative_storage_retry_in_one_line(cli, tmp_path):
    code, _, err = cli(["compare", "--storage-retry", "-1", "--out", str(tmp_path / "o")])
    assert code == 2
    assert err.strip() == (
        "reglab: error: The 'storage_retry' parameter of compare must be a float >= 0. Got -1.0."
    )


def test_hold_point_goes_on_when_its_marker_is_removed_and_holds_once(tmp_path, monkeypatch):
    from reglab.lab.studies import holds

    monkeypatch.setenv(holds.VARIABLE, "before_store")
    monkeypatch.setattr(holds, "_released", set())
    marker = tmp_path / ".held-before_store"
    gone = threading.Event()

    def release():
        while not marker.exists():
            threading.Event().wait(0.01)
        marker.unlink()
        gone.set()

    threading.Thread(target=release, daemon=True).start()
    holds.hold("before_store", tmp_path)
    assert gone.is_set()
    holds.hold("before_store", tmp_path)  # let go on once: this process does not hold again
    assert not marker.exists()


def test_optunas_misleading_log_line_about_a_lost_connection_is_dropped():
    import logging

    _storage(Flaky())  # installs the filter
    logger = logging.getLogger("optuna.storages._rdb.storage")
    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logger.addHandler(handler)
    try:
        logger.warning(
            "Caught an error from sqlalchemy: (psycopg.errors.AdminShutdown) terminating "
            "connection due to administrator command. Falling back to a slower alternative."
        )
        logger.warning("Caught an error from sqlalchemy: too many SQL variables.")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen] == [
        "Caught an error from sqlalchemy: too many SQL variables."
    ]
