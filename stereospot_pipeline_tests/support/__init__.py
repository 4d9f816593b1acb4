"""Test helpers shared by the S3 and Postgres tests: local servers, AWS credentials, media clips."""
