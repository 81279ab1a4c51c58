//! Amazon ECS `Engine` and CloudWatch Logs `LogSource` for flotilla. Not yet implemented: see the AWS issue.
#![forbid(unsafe_code)]
