//! The agent runner's state file: the task it holds and, once known, its outcome.
//! Written atomically (temp file, fsync, rename) so a crash leaves the old or the
//! new content, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a task ended on this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Exit 0: the result to report.
    Complete {
        /// The result JSON.
        result: Value,
        /// Tokens used, if the result said.
        tokens_used: Option<u64>,
    },
    /// Anything else: the reason to report.
    Failed {
        /// Exit status and stderr tail, or why it could not run.
        error: String,
    },
}

/// The task this agent holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldTask {
    /// The task.
    pub task_id: String,
    /// The generation to echo.
    pub generation: u64,
    /// What to do.
    pub description: String,
    /// The submitter's metadata.
    pub metadata: Value,
    /// When it was assigned.
    pub assigned_at: u64,
    /// Set once the command ended; kept until the coordinator acknowledges it.
    pub outcome: Option<Outcome>,
}

impl HeldTask {
    /// The JSON given to the command on stdin.
    pub fn stdin_json(&self) -> Value {
        serde_json::json!({
            "task_id": self.task_id,
            "generation": self.generation,
            "description": self.description,
            "metadata": self.metadata,
            "assigned_at": self.assigned_at,
        })
    }
}

/// The state file at a path.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (not read yet).
    pub fn new(path: &Path) -> StateFile {
        StateFile {
            path: path.to_owned(),
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The held task, if the file holds one. A corrupt file is an error: it must
    /// not be silently dropped, it may hold a task.
    pub fn load(&self) -> Result<Option<HeldTask>, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Ok(None),
            Ok(bytes) => serde_json::from_slice::<Option<HeldTask>>(&bytes)
                .map_err(|e| format!("the state file {} is not valid: {e}", self.path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "cannot read the state file {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Replaces the content atomically.
    pub fn save(&self, task: Option<&HeldTask>) -> std::io::Result<()> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec_pretty(&task).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(dir) = std::fs::File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}
