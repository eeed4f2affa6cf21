//! A [`StateHook`] that keeps the held task in a JSON file, written atomically
//! (temporary file, fsync, rename, fsync of the folder) so that a crash leaves
//! the old or the new content, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{HeldTask, StateHook};

/// The held task in a JSON file: `null` (or an empty or missing file) when none
/// is held. The bundled runner's `--state-file`.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (not read yet).
    pub fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The held task, if the file holds one. A file that does not parse is an
    /// error: it must not be silently dropped, it may hold a task.
    pub fn read(&self) -> Result<Option<HeldTask>, String> {
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
    pub fn write(&self, task: Option<&HeldTask>) -> std::io::Result<()> {
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

impl StateHook for StateFile {
    fn load(&mut self) -> Result<Option<HeldTask>, String> {
        self.read()
    }

    fn save(&mut self, task: Option<&HeldTask>) -> Result<(), String> {
        self.write(task)
            .map_err(|e| format!("cannot write the state file {}: {e}", self.path.display()))
    }
}
