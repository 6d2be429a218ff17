//! The sessions one replica holds: each a folder with the source glued from
//! the chunks a worker forwards (by offset: a duplicate changes nothing, a
//! gap is refused), then the encode's output. Folders outlive a restart;
//! the encode's state does not (an interrupted encode is asked for again).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::Duration,
};

use reelay_shared::{
    VideoId,
    video::fflow::{EncodeState, SessionInfo, Source},
};
use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt,
    sync::{Mutex as AsyncMutex, Notify},
    task::JoinHandle,
    time::Instant,
};

/// Why a request about a session was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no such session")]
    Unknown,
    #[error("the disk budget ({budget} bytes) has no room for {needed} more")]
    Full { budget: u64, needed: u64 },
    #[error("offset {offset} is past the {length} bytes glued so far")]
    Gap { offset: u64, length: u64 },
    #[error("{end} bytes run past the upload's {size}")]
    TooLong { end: u64, size: u64 },
    #[error("only {length} of {size} bytes are here; encode from S3")]
    Incomplete { length: u64, size: u64 },
    #[error("local disk: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct Meta {
    size_bytes: u64,
}

pub struct Session {
    pub video: VideoId,
    pub size: u64,
    pub dir: PathBuf,
    pub state: AsyncMutex<State>,
    /// A running encode's percent (ffmpeg reports many times a second).
    pub progress: AtomicU8,
    /// False once the encode ended and the files are gone: the session
    /// then reserves no disk.
    pub holds_files: AtomicBool,
    /// Wakes those waiting for the encode to end.
    pub ended: Notify,
}

pub struct State {
    pub length: u64,
    pub encode: EncodeState,
    pub last_activity: Instant,
    /// The encode's task; aborting it kills ffmpeg.
    pub task: Option<JoinHandle<()>>,
}

impl Session {
    fn new(video: VideoId, size: u64, dir: PathBuf, length: u64) -> Self {
        Self {
            video,
            size,
            dir,
            state: AsyncMutex::new(State {
                length,
                encode: EncodeState::Idle,
                last_activity: Instant::now(),
                task: None,
            }),
            progress: AtomicU8::new(0),
            holds_files: AtomicBool::new(true),
            ended: Notify::new(),
        }
    }

    pub fn source(&self) -> PathBuf {
        self.dir.join("source")
    }

    pub fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    pub fn poster(&self) -> PathBuf {
        self.dir.join("poster.jpg")
    }
}

pub struct Sessions {
    dir: PathBuf,
    budget: u64,
    address: String,
    map: Mutex<HashMap<VideoId, Arc<Session>>>,
}

/// A session holds its source and its renditions, about as large.
fn reserved(size: u64) -> u64 {
    size.saturating_mul(2)
}

impl Sessions {
    /// Opens the data folder, taking back the sessions a previous run left
    /// (their glued bytes still count). A session folder without its
    /// `meta.json` (cut off while starting) is removed; anything not named
    /// like a session is left alone, in case the folder is shared.
    pub async fn open(dir: PathBuf, budget: u64, address: String) -> std::io::Result<Self> {
        tokio::fs::create_dir_all(&dir).await?;
        let mut map = HashMap::new();
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            let video = entry.file_name().to_str().and_then(VideoId::parse);
            let meta = tokio::fs::read(path.join("meta.json"))
                .await
                .ok()
                .and_then(|b| serde_json::from_slice::<Meta>(&b).ok());
            let Some(video) = video else {
                tracing::warn!(path = %path.display(), "not a session; left alone");
                continue;
            };
            let Some(meta) = meta else {
                remove(&path).await;
                continue;
            };
            let _ = tokio::fs::remove_dir_all(path.join("out")).await;
            let length = tokio::fs::metadata(path.join("source"))
                .await
                .map_or(0, |m| m.len());
            tracing::info!(video.id = %video, length_bytes = length, "session taken back from disk");
            map.insert(
                video,
                Arc::new(Session::new(video, meta.size_bytes, path, length)),
            );
        }
        Ok(Self {
            dir,
            budget,
            address,
            map: Mutex::new(map),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn get(&self, video: VideoId) -> Result<Arc<Session>, SessionError> {
        self.map
            .lock()
            .expect("not poisoned")
            .get(&video)
            .cloned()
            .ok_or(SessionError::Unknown)
    }

    pub fn count(&self) -> usize {
        self.map.lock().expect("not poisoned").len()
    }

    /// Bytes the sessions have reserved.
    pub fn reserved(&self) -> u64 {
        self.map
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|s| s.holds_files.load(Ordering::Relaxed))
            .map(|s| reserved(s.size))
            .sum()
    }

    /// A new session, or the one this video already has here.
    pub async fn start(
        &self,
        video: VideoId,
        size: u64,
    ) -> Result<(Arc<Session>, bool), SessionError> {
        let session = {
            let mut map = self.map.lock().expect("not poisoned");
            if let Some(existing) = map.get(&video) {
                return Ok((existing.clone(), false));
            }
            let used: u64 = map
                .values()
                .filter(|s| s.holds_files.load(Ordering::Relaxed))
                .map(|s| reserved(s.size))
                .sum();
            if used.saturating_add(reserved(size)) > self.budget {
                return Err(SessionError::Full {
                    budget: self.budget,
                    needed: reserved(size),
                });
            }
            let session = Arc::new(Session::new(
                video,
                size,
                self.dir.join(video.to_string()),
                0,
            ));
            map.insert(video, session.clone());
            session
        };
        let made = async {
            tokio::fs::create_dir_all(&session.dir).await?;
            let meta = serde_json::to_vec(&Meta { size_bytes: size }).expect("JSON");
            tokio::fs::write(session.dir.join("meta.json"), meta).await?;
            tokio::fs::File::create(session.source()).await.map(drop)
        }
        .await;
        if let Err(e) = made {
            self.map.lock().expect("not poisoned").remove(&video);
            remove(&session.dir).await;
            return Err(e.into());
        }
        Ok((session, true))
    }

    /// Glues `bytes` at `offset`: what is already here is skipped, a gap is
    /// refused. Returns the new length.
    pub async fn glue(
        &self,
        video: VideoId,
        offset: u64,
        bytes: &[u8],
    ) -> Result<u64, SessionError> {
        let session = self.get(video)?;
        let mut state = session.state.lock().await;
        state.last_activity = Instant::now();
        if offset > state.length {
            return Err(SessionError::Gap {
                offset,
                length: state.length,
            });
        }
        let end = offset + bytes.len() as u64;
        if end > session.size {
            return Err(SessionError::TooLong {
                end,
                size: session.size,
            });
        }
        if end <= state.length || !matches!(state.encode, EncodeState::Idle) {
            return Ok(state.length);
        }
        let fresh = &bytes[(state.length - offset) as usize..];
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(session.source())
            .await?;
        file.write_all(fresh).await?;
        // tokio's File writes in the background: without a flush the bytes
        // may not be in the file yet when the length says they are (a read
        // right after, the encode's, saw a short file).
        file.flush().await?;
        state.length = end;
        Ok(end)
    }

    pub async fn info(&self, video: VideoId) -> Result<SessionInfo, SessionError> {
        let session = self.get(video)?;
        let state = session.state.lock().await;
        Ok(SessionInfo {
            address: self.address.clone(),
            video_id: video,
            size_bytes: session.size,
            length: state.length,
            encode: state.encode.clone(),
        })
    }

    /// Whether an encode from `source` can start: the local bytes must all
    /// be here.
    pub fn check_source(
        session: &Session,
        state: &State,
        source: Source,
    ) -> Result<(), SessionError> {
        if source == Source::Local && state.length < session.size {
            return Err(SessionError::Incomplete {
                length: state.length,
                size: session.size,
            });
        }
        Ok(())
    }

    /// Drops a session: its encode stops (ffmpeg is killed), its files go.
    pub async fn remove(&self, video: VideoId) -> bool {
        let Some(session) = self.map.lock().expect("not poisoned").remove(&video) else {
            return false;
        };
        if let Some(task) = session.state.lock().await.task.take() {
            task.abort();
        }
        remove(&session.dir).await;
        true
    }

    /// Drops every session idle for `ttl`: the upload was abandoned, or its
    /// worker never came back for the result.
    pub async fn expire(&self, ttl: Duration) -> usize {
        let sessions: Vec<Arc<Session>> = self
            .map
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect();
        let mut expired = 0;
        for session in sessions {
            let idle = {
                let state = session.state.lock().await;
                let working = matches!(
                    state.encode,
                    EncodeState::Queued | EncodeState::Running { .. }
                );
                !working && state.last_activity.elapsed() >= ttl
            };
            if idle && self.remove(session.video).await {
                tracing::info!(video.id = %session.video, "idle session expired");
                expired += 1;
            }
        }
        expired
    }
}

/// Removes a folder and what is in it, best effort.
pub async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_dir_all(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "removing a session's files failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_are_glued_by_offset_duplicates_skipped_gaps_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::open(dir.path().join("data"), 1 << 20, "http://x/r1/".into())
            .await
            .unwrap();
        let video = VideoId::new();
        let (_, new) = sessions.start(video, 10).await.unwrap();
        assert!(new);
        assert!(
            !sessions.start(video, 10).await.unwrap().1,
            "the same session again"
        );
        assert_eq!(sessions.glue(video, 0, b"abcd").await.unwrap(), 4);
        assert_eq!(
            sessions.glue(video, 2, b"cdef").await.unwrap(),
            6,
            "overlap skipped"
        );
        assert_eq!(
            sessions.glue(video, 0, b"ab").await.unwrap(),
            6,
            "a duplicate"
        );
        assert!(matches!(
            sessions.glue(video, 8, b"ij").await,
            Err(SessionError::Gap {
                offset: 8,
                length: 6
            })
        ));
        assert!(matches!(
            sessions.glue(video, 6, b"ghijk").await,
            Err(SessionError::TooLong { .. })
        ));
        assert_eq!(sessions.glue(video, 6, b"ghij").await.unwrap(), 10);
        let source = sessions.get(video).unwrap().source();
        assert_eq!(tokio::fs::read(source).await.unwrap(), b"abcdefghij");

        // A restart takes the session back with its bytes, and leaves what
        // is not a session alone.
        std::fs::write(dir.path().join("data").join("notes.txt"), b"mine").unwrap();
        drop(sessions);
        let again = Sessions::open(dir.path().join("data"), 1 << 20, "http://x/r1/".into())
            .await
            .unwrap();
        assert_eq!(again.info(video).await.unwrap().length, 10);
        assert!(again.remove(video).await);
        assert!(matches!(
            again.info(video).await,
            Err(SessionError::Unknown)
        ));
        let left: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["notes.txt"]);
    }

    #[tokio::test]
    async fn an_idle_session_expires_with_its_files_and_a_busy_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::open(dir.path().to_path_buf(), 1 << 20, "a".into())
            .await
            .unwrap();
        let (idle, busy) = (VideoId::new(), VideoId::new());
        sessions.start(idle, 4).await.unwrap();
        sessions.start(busy, 4).await.unwrap();
        sessions.glue(idle, 0, b"ab").await.unwrap();
        sessions.get(busy).unwrap().state.lock().await.encode = EncodeState::Running { percent: 5 };
        assert_eq!(
            sessions.expire(Duration::from_secs(3600)).await,
            0,
            "nothing is that old"
        );
        assert_eq!(sessions.expire(Duration::ZERO).await, 1);
        assert!(matches!(
            sessions.info(idle).await,
            Err(SessionError::Unknown)
        ));
        assert!(
            sessions.info(busy).await.is_ok(),
            "an encode under way stays"
        );
        assert!(!dir.path().join(idle.to_string()).exists());
    }

    #[tokio::test]
    async fn the_disk_budget_refuses_a_session_that_would_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        let sessions = Sessions::open(dir.path().to_path_buf(), 100, "a".into())
            .await
            .unwrap();
        sessions.start(VideoId::new(), 30).await.unwrap();
        assert!(matches!(
            sessions.start(VideoId::new(), 30).await,
            Err(SessionError::Full { .. })
        ));
        assert_eq!(sessions.reserved(), 60);
    }
}
