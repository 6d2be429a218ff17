//! A TCP forwarder that a test can cut, to take a real service away from
//! one component (the broker from the api) without stopping it for the
//! other tests.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinSet,
};

pub struct Proxy {
    pub port: u16,
    upstream: &'static str,
    task: tokio::task::JoinHandle<()>,
    tripped: Arc<AtomicBool>,
    /// Cut (its task awaited): a JoinHandle is awaited once.
    down: bool,
}

/// When a proxy cuts by itself: once this many bytes went upstream.
struct Trip {
    after: u64,
    sent: AtomicU64,
    now: Notify,
}

impl Proxy {
    pub async fn start(upstream: &'static str) -> Self {
        Self::start_on(upstream, 0, None).await
    }

    /// Forwards until `bytes` have gone from clients to `upstream`, then
    /// cuts as [`Proxy::cut`] does, in the middle of whatever was on the
    /// way; [`Proxy::tripped`] tells when.
    pub async fn cutting_after(upstream: &'static str, bytes: u64) -> Self {
        Self::start_on(upstream, 0, Some(bytes)).await
    }

    async fn start_on(upstream: &'static str, port: u16, trip_after: Option<u64>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let tripped = Arc::new(AtomicBool::new(false));
        let trip = trip_after.map(|after| {
            Arc::new(Trip {
                after,
                sent: AtomicU64::new(0),
                now: Notify::new(),
            })
        });
        let flag = tripped.clone();
        let task = tokio::spawn(async move {
            // Dropping the set (leaving the loop) closes every connection.
            let mut connections = JoinSet::new();
            loop {
                let accepted = match &trip {
                    Some(trip) => tokio::select! {
                        accepted = listener.accept() => accepted,
                        () = trip.now.notified() => break,
                    },
                    None => listener.accept().await,
                };
                let Ok((client, _)) = accepted else { break };
                let trip = trip.clone();
                connections.spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, trip).await;
                    }
                });
            }
            flag.store(true, Ordering::SeqCst);
        });
        Self {
            port,
            upstream,
            task,
            tripped,
            down: false,
        }
    }

    /// Whether a proxy made with [`Proxy::cutting_after`] has cut.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Forwards again, on the same port, after [`Proxy::cut`]: the service
    /// came back.
    pub async fn restore(&mut self) {
        self.cut().await;
        *self = Self::start_on(self.upstream, self.port, None).await;
    }

    /// Closes the listener and every forwarded connection: to the client it
    /// looks like the service went down. Done when it returns (an aborted
    /// task is dropped later; until then it would still accept).
    pub async fn cut(&mut self) {
        if self.down {
            return;
        }
        self.task.abort();
        let _ = (&mut self.task).await;
        self.down = true;
    }
}

async fn forward(mut client: TcpStream, mut server: TcpStream, trip: Option<Arc<Trip>>) {
    let Some(trip) = trip else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let up = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                return server_write.shutdown().await;
            }
            server_write.write_all(&buffer[..n]).await?;
            if trip.sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64 >= trip.after {
                trip.now.notify_one();
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    let _: (std::io::Result<()>, std::io::Result<u64>) = tokio::join!(up, down);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
