//! Errors as they travel on the wire: a stable machine code plus a human message.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. Scripts may match on these; never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    NotFound,
    AlreadyExists,
    OperationFailed,
    Unauthorized,
    UnknownMethod,
    Unavailable,
    /// The VM is not running (exec, stop on a stopped VM).
    NotRunning,
    /// The VM is already running or starting (start, delete without force).
    AlreadyRunning,
    /// The resource is used by others (an image that VMs boot from).
    InUse,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::OperationFailed => "operation_failed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownMethod => "unknown_method",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotRunning => "not_running",
            ErrorCode::AlreadyRunning => "already_running",
            ErrorCode::InUse => "in_use",
        }
    }

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 403,
            ErrorCode::NotFound | ErrorCode::UnknownMethod => 404,
            ErrorCode::AlreadyExists
            | ErrorCode::NotRunning
            | ErrorCode::AlreadyRunning
            | ErrorCode::InUse => 409,
            ErrorCode::OperationFailed => 500,
            ErrorCode::Unavailable => 503,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error as returned by the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Correlates this error with the daemon log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            operation_id: None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)?;
        if let Some(op) = &self.operation_id {
            write!(f, " [operation {op}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Body of every non-2xx response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ApiError,
}
