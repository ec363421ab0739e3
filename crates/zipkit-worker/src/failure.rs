//! Why a job attempt failed, decided at the place of failure: the public code and message, the
//! request field it concerns, whose problem it is, and whether another attempt could end
//! differently. Nothing downstream classifies failures by their code or their text.

use zipkit_domain::models::JobError;

/// Whether another attempt at the whole job is worth it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Another attempt would meet the same answer: a missing source, a refused key, a limit.
    Never,
    /// May go away on its own (a source down, the network, this side's database): retried while
    /// attempts remain.
    Later,
    /// An answer that may or may not last (a store's HTTP 500): retried, but the same answer on
    /// the next attempt is final, so a store that keeps refusing is not asked five times.
    UnlessRepeated,
}

/// A store's refusal says what another attempt may bring; the job retries accordingly.
impl From<zipkit_storage::RetryClass> for Retry {
    fn from(class: zipkit_storage::RetryClass) -> Self {
        match class {
            zipkit_storage::RetryClass::Later => Self::Later,
            zipkit_storage::RetryClass::UnlessRepeated => Self::UnlessRepeated,
            zipkit_storage::RetryClass::Never => Self::Never,
        }
    }
}

/// Whose problem it is, which is the `error.type` the API shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request must change (a source, a limit): `invalid_request_error`.
    Request,
    /// The bucket, the deployment or zipkit itself: `api_error`.
    Service,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct JobFailure {
    /// The stable `error.code`.
    pub code: &'static str,
    pub message: String,
    /// The request field it concerns (`urls[3]`).
    pub param: Option<String>,
    pub blame: Blame,
    pub retry: Retry,
    /// The other side's own code for its answer (a store's `InternalError`), which with `code`
    /// tells one answer from another.
    pub answer: Option<String>,
}

impl JobFailure {
    pub fn new(code: &'static str, message: impl Into<String>, blame: Blame, retry: Retry) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
            blame,
            retry,
            answer: None,
        }
    }

    /// The other side answered with its own `code`.
    pub fn answered(mut self, code: impl Into<String>) -> Self {
        self.answer = Some(code.into());
        self
    }

    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Trouble on this side (the database, a task that died): worth another attempt.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("internal_error", message, Blame::Service, Retry::Later)
    }

    /// PostgreSQL failed this side: worth another attempt.
    pub fn database(error: impl std::fmt::Display) -> Self {
        Self::internal(format!("database: {error}"))
    }

    /// The job was cancelled through the API, or its lease went to another worker.
    pub fn cancelled() -> Self {
        Self::new(
            CANCELLED,
            "the job was cancelled (or taken over by another worker)",
            Blame::Service,
            Retry::Never,
        )
    }

    pub fn is_cancelled(&self) -> bool {
        self.code == CANCELLED
    }

    /// What identifies this answer, to tell whether the next attempt met the same one: the
    /// codes, not the words (a message may carry a request id that changes every time).
    pub fn fingerprint(&self) -> String {
        match &self.answer {
            Some(answer) => format!("{}/{answer}", self.code),
            None => self.code.to_owned(),
        }
    }

    /// Whether the job is worth another attempt, given the failure of the attempt before (its
    /// `fingerprint`, if that attempt failed).
    pub fn worth_retrying(&self, previous: Option<&str>) -> bool {
        match self.retry {
            Retry::Never => false,
            Retry::Later => true,
            Retry::UnlessRepeated => previous != Some(self.fingerprint().as_str()),
        }
    }

    /// The `error` the API shows.
    pub fn to_job_error(&self) -> JobError {
        JobError {
            error_type: match self.blame {
                Blame::Request => "invalid_request_error",
                Blame::Service => "api_error",
            }
            .into(),
            code: self.code.into(),
            message: self.message.clone(),
            param: self.param.clone(),
        }
    }
}

const CANCELLED: &str = "cancelled";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_that_may_not_last_is_retried_until_it_repeats() {
        let failure = |answer: &str, request_id: &str| {
            JobFailure::new(
                "bucket_unavailable",
                format!("The provider refused the request: {answer}: request {request_id}"),
                Blame::Service,
                Retry::UnlessRepeated,
            )
            .answered(answer)
        };
        let first = failure("InternalError", "A1");
        assert!(first.worth_retrying(None));
        assert!(first.worth_retrying(Some("bucket_unreachable")));
        assert!(
            first.worth_retrying(Some(&failure("SlowDown", "A1").fingerprint())),
            "another answer"
        );
        assert!(
            !failure("InternalError", "B2").worth_retrying(Some(&first.fingerprint())),
            "the same answer with other words"
        );
        let later = JobFailure::internal("database unavailable");
        assert!(later.worth_retrying(Some(&later.fingerprint())));
        assert!(!JobFailure::cancelled().worth_retrying(None));
    }

    #[test]
    fn blame_decides_the_error_type() {
        let source = JobFailure::new("source_not_found", "404", Blame::Request, Retry::Never)
            .with_param("urls[2]");
        let error = source.to_job_error();
        assert_eq!(error.error_type, "invalid_request_error");
        assert_eq!(error.param.as_deref(), Some("urls[2]"));
        assert_eq!(
            JobFailure::internal("x").to_job_error().error_type,
            "api_error"
        );
    }
}
