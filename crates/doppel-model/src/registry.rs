//! The model registry: named, numbered versions of models kept in the data directory,
//! `<data>/.models/<name>/v<N>/` (each a model directory as `store` writes it). The leading
//! dot keeps it clear of the lake: the lake escapes a leading dot in database names, so no
//! database folder can ever be called `.models`. The folders
//! are the registry: listing reads them, nothing else has to be kept in step, and a version
//! appears only once it is whole (written under a temporary name, then renamed).
//! Nothing here ever fetches anything from anywhere.

use std::path::{Path, PathBuf};

use crate::card::ModelCard;
use crate::error::{ModelError, Result};
use crate::store;

pub struct Registry {
    root: PathBuf,
}

/// The file in a name's folder that holds the version at work.
const LIVE: &str = "LIVE";

/// One registered version.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub version: u32,
    pub path: PathBuf,
    pub card: ModelCard,
    /// When the version was written, from the folder's modification time.
    pub created: Option<std::time::SystemTime>,
}

fn registry_error(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Store {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Model names: letters, digits, `-` and `_`, so they are safe as folder names anywhere.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ModelError::Settings(format!(
            "model name `{name}`: use 1 to 64 letters, digits, `-` or `_`"
        )));
    }
    Ok(())
}

impl Registry {
    /// The registry of a data directory (created when the first model is registered).
    pub fn in_data_dir(data: &Path) -> Self {
        Registry {
            root: data.join(".models"),
        }
    }

    /// Where a pretraining that will register as `name` keeps its checkpoints meanwhile.
    pub fn checkpoint_dir(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        Ok(self.root.join(name).join(".checkpoint"))
    }

    fn versions(&self, name: &str) -> Result<Vec<u32>> {
        let dir = self.root.join(name);
        let Ok(read) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<u32> = read
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    /// Registers the model written into a scratch folder by `write` as the next version of
    /// `name`; returns its version and folder.
    pub fn register(
        &self,
        name: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(u32, PathBuf)> {
        check_name(name)?;
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).map_err(|e| registry_error(&dir, e))?;
        let scratch = dir.join(format!(".writing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        if let Err(e) = write(&scratch) {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        // Two writers racing for the same number: the loser's rename fails, it tries the next.
        for _ in 0..100 {
            let version = self.versions(name)?.last().copied().unwrap_or(0) + 1;
            let target = dir.join(format!("v{version}"));
            if std::fs::rename(&scratch, &target).is_ok() {
                return Ok((version, target));
            }
        }
        Err(registry_error(&dir, "cannot find a free version number"))
    }

    /// Every registered version, by name then version.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let Ok(read) = std::fs::read_dir(&self.root) else {
            return Ok(Vec::new());
        };
        let mut names: Vec<String> = read
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        let mut entries = Vec::new();
        for name in names {
            for version in self.versions(&name)? {
                let path = self.root.join(&name).join(format!("v{version}"));
                let card = store::load_card(&path)?;
                let created = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                entries.push(Entry {
                    name: name.clone(),
                    version,
                    path,
                    card,
                    created,
                });
            }
        }
        Ok(entries)
    }

    /// The version of `name` marked as the one at work (`set_live`), if any.
    pub fn live_version(&self, name: &str) -> Option<u32> {
        check_name(name).ok()?;
        std::fs::read_to_string(self.root.join(name).join(LIVE))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Marks `version` of `name` as the one at work (a twin's promotion), atomically.
    pub fn set_live(&self, name: &str, version: u32) -> Result<()> {
        check_name(name)?;
        let dir = self.root.join(name);
        let scratch = dir.join(format!(".{LIVE}-{}", std::process::id()));
        std::fs::write(&scratch, format!("{version}\n"))
            .map_err(|e| registry_error(&scratch, e))?;
        std::fs::rename(&scratch, dir.join(LIVE)).map_err(|e| registry_error(&dir, e))
    }

    /// The folder of `name` (its latest version) or `name@N` / `name@vN`.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        let (name, version) = match spec.split_once('@') {
            Some((name, v)) => {
                let number = v
                    .strip_prefix('v')
                    .unwrap_or(v)
                    .parse::<u32>()
                    .map_err(|_| {
                        ModelError::Settings(format!(
                            "`{spec}`: the version after @ is a number, like {name}@3"
                        ))
                    })?;
                (name, Some(number))
            }
            None => (spec, None),
        };
        check_name(name)?;
        let versions = self.versions(name)?;
        let Some(&latest) = versions.last() else {
            return Err(registry_error(
                &self.root,
                format!(
                    "no model named `{name}` here (`doppel model list` shows what there is; \
                     give a model folder's path or register one with --name)"
                ),
            ));
        };
        let version = version.unwrap_or(latest);
        if !versions.contains(&version) {
            return Err(registry_error(
                &self.root.join(name),
                format!("`{name}` has no version {version} (it has v1 to v{latest})"),
            ));
        }
        Ok(self.root.join(name).join(format!("v{version}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_versions_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::in_data_dir(dir.path());
        assert!(registry.list().unwrap().is_empty());
        assert!(check_name("../x").is_err());
        assert!(check_name("pump-model_2").is_ok());
        let e = registry.resolve("pumps").unwrap_err().to_string();
        assert!(e.contains("no model named `pumps`"), "{e}");
        let e = registry.resolve("pumps@x").unwrap_err().to_string();
        assert!(e.contains("version after @"), "{e}");
        // A failed write leaves no version behind.
        let failed = registry.register("pumps", |_| Err(ModelError::Settings("boom".into())));
        assert!(failed.is_err());
        assert!(registry.versions("pumps").unwrap().is_empty());
        // The version at work is marked, and read back.
        assert_eq!(registry.live_version("pumps"), None);
        registry
            .register("pumps", |dir| {
                std::fs::create_dir_all(dir).map_err(|e| registry_error(dir, e))
            })
            .unwrap();
        registry.set_live("pumps", 1).unwrap();
        assert_eq!(registry.live_version("pumps"), Some(1));
    }
}
