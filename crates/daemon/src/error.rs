//! Errors of daemon operations, each mapped to a stable wire code.

use banger_api::{ApiError, ErrorCode};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    UnknownMethod(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(StoreError),
    #[error("{0}")]
    Failed(String),
    #[error("cancelled by the client")]
    Cancelled,
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    NotRunning(String),
    #[error("{0}")]
    AlreadyRunning(String),
    #[error("{0}")]
    InUse(String),
}

impl OpError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        OpError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::BadRequest(_) => ErrorCode::BadRequest,
            OpError::NotFound(_) => ErrorCode::NotFound,
            OpError::AlreadyExists(_)
            | OpError::Store(StoreError::NameTaken(_))
            | OpError::Store(StoreError::VmNameTaken(_)) => ErrorCode::AlreadyExists,
            OpError::Unauthorized(_) => ErrorCode::Unauthorized,
            OpError::UnknownMethod(_) => ErrorCode::UnknownMethod,
            OpError::Io { .. } | OpError::Store(_) | OpError::Failed(_) | OpError::Cancelled => {
                ErrorCode::OperationFailed
            }
            OpError::Unavailable(_) => ErrorCode::Unavailable,
            OpError::NotRunning(_) => ErrorCode::NotRunning,
            OpError::AlreadyRunning(_) => ErrorCode::AlreadyRunning,
            OpError::InUse(_) => ErrorCode::InUse,
        }
    }

    pub fn to_api(&self, operation_id: &str) -> ApiError {
        ApiError {
            code: self.code(),
            message: self.to_string(),
            operation_id: Some(operation_id.to_string()),
        }
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        OpError::Store(e)
    }
}
