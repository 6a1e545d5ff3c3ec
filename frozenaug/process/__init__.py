"""What a console script does around its command: signals and child processes, OS errors and
out-of-memory as one line, stdout, HOME and TMPDIR, open-file limits, the environment."""
