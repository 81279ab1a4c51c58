//! Amazon SQS `Queue` for flotilla. Not yet implemented: see the AWS issue.
#![forbid(unsafe_code)]
