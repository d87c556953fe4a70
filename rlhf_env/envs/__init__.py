"""One module per environment family. Importing this package registers nothing."""
