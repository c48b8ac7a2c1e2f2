"""Reading and writing: atomic writes, S3, the CFPB corpus and complaint files, CSVs for people."""
