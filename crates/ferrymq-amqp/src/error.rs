//! Wire-level errors and the single place where errors become AMQP reply codes.

use ferrymq_core::CoreError;

/// AMQP reply codes RabbitMQ uses.
pub mod code {
    pub const REPLY_SUCCESS: u16 = 200;
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const NO_ROUTE: u16 = 312;
    pub const NO_CONSUMERS: u16 = 313;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const INVALID_PATH: u16 = 402;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// Errors decoding frames and methods.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {size} bytes exceeds frame_max {max}")]
    FrameTooLarge { size: u32, max: u32 },
    #[error("invalid frame end byte {0:#04x}")]
    BadFrameEnd(u8),
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("unknown method {class}/{method}")]
    UnknownMethod { class: u16, method: u16 },
    #[error("malformed {0}")]
    Syntax(&'static str),
}

/// An error to report to the peer: a reply code, its text, and whether it closes the
/// whole connection (hard error) or just the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
    /// The (class, method) that caused it, reported in `channel.close` / `connection.close`.
    pub method: Option<(u16, u16)>,
}

impl AmqpError {
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        AmqpError {
            code,
            text: text.into(),
            method: None,
        }
    }

    /// Attributes the error to a method unless it already names one.
    pub fn in_method(mut self, class_id: u16, method_id: u16) -> Self {
        self.method.get_or_insert((class_id, method_id));
        self
    }

    /// Hard errors (5xx) close the connection; soft ones (4xx) close the channel.
    pub fn is_connection_error(&self) -> bool {
        self.code >= 500 || self.code == code::CONNECTION_FORCED || self.code == code::INVALID_PATH
    }

    /// `reply-text` as RabbitMQ formats it: `NAME - detail`.
    pub fn reply_text(&self) -> String {
        let name = match self.code {
            code::CONTENT_TOO_LARGE => "CONTENT_TOO_LARGE",
            code::NO_ROUTE => "NO_ROUTE",
            code::CONNECTION_FORCED => "CONNECTION_FORCED",
            code::ACCESS_REFUSED => "ACCESS_REFUSED",
            code::NOT_FOUND => "NOT_FOUND",
            code::RESOURCE_LOCKED => "RESOURCE_LOCKED",
            code::PRECONDITION_FAILED => "PRECONDITION_FAILED",
            code::FRAME_ERROR => "FRAME_ERROR",
            code::SYNTAX_ERROR => "SYNTAX_ERROR",
            code::COMMAND_INVALID => "COMMAND_INVALID",
            code::CHANNEL_ERROR => "CHANNEL_ERROR",
            code::UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            code::RESOURCE_ERROR => "RESOURCE_ERROR",
            code::NOT_ALLOWED => "NOT_ALLOWED",
            code::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            code::INTERNAL_ERROR => "INTERNAL_ERROR",
            _ => "ERROR",
        };
        let mut t = format!("{name} - {}", self.text);
        if t.len() > 255 {
            // RabbitMQ (rabbit_binary_generator) keeps 252 bytes and marks the cut.
            t.truncate(252);
            while !t.is_char_boundary(t.len()) {
                t.pop();
            }
            t.push_str("...");
        }
        t
    }
}

impl From<WireError> for AmqpError {
    fn from(e: WireError) -> Self {
        let c = match e {
            WireError::FrameTooLarge { .. }
            | WireError::BadFrameEnd(_)
            | WireError::UnknownFrameType(_) => code::FRAME_ERROR,
            WireError::UnknownMethod { .. } => code::NOT_IMPLEMENTED,
            // RabbitMQ reports undecodable method arguments as a frame error.
            WireError::Syntax(_) => code::FRAME_ERROR,
        };
        AmqpError::new(c, e.to_string())
    }
}

impl From<CoreError> for AmqpError {
    fn from(e: CoreError) -> Self {
        let c = match &e {
            CoreError::NotFound { .. } => code::NOT_FOUND,
            CoreError::Precondition(_) => code::PRECONDITION_FAILED,
            CoreError::AccessRefused(_) => code::ACCESS_REFUSED,
            CoreError::ResourceLocked(_) => code::RESOURCE_LOCKED,
            CoreError::NotAllowed(_) => code::NOT_ALLOWED,
            CoreError::CommandInvalid(_) => code::COMMAND_INVALID,
            CoreError::Internal(_) => code::INTERNAL_ERROR,
        };
        AmqpError::new(c, e.to_string())
    }
}
