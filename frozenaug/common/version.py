"""The package's version: recorded in every manifest and run (a build resumes only under it)."""

VERSION = "0.1.0"
