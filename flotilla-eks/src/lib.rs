//! Kubernetes (EKS) `Engine` and log sources for flotilla. Not yet implemented: see the EKS issue.
#![forbid(unsafe_code)]
