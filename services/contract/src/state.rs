//! Where a job is in its life: `queued -> converting -> done | failed`.

use serde::{Deserialize, Serialize};

/// A job's state; its name (`as_str`) is what the API, the job records,
/// the events' routing keys and the desktop's store all say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Converting,
    Done,
    Failed,
}

impl JobState {
    pub const ALL: [JobState; 4] = [
        JobState::Queued,
        JobState::Converting,
        JobState::Done,
        JobState::Failed,
    ];

    /// The name, as serde writes it (for queries and routing keys).
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Converting => "converting",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// The state of that name, if it is one.
    pub fn from_name(name: &str) -> Option<JobState> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
    }

    /// Whether the job has ended, well or not.
    pub const fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_what_serde_writes() {
        for state in JobState::ALL {
            let json = serde_json::to_value(state).expect("json");
            assert_eq!(json, state.as_str());
            assert_eq!(JobState::from_name(state.as_str()), Some(state));
        }
        assert_eq!(JobState::from_name("Done"), None);
    }
}
