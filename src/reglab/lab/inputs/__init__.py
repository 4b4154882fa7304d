"""What a study is made of: its data, its model and its recipes, each resolved from a name."""
