"""What a study shows: statistics over seeds, figures of trained models, tables, plots and the
HTML report."""
