"""The jobs behind the commands: each validates its arguments, then does its work as a job
(catalog/jobs.py) that records its run and commits its outputs."""
