//! A TCP forwarder that a test can cut, to take a real service away from
//! one component (the broker from the api) without stopping it for the
//! other tests.

use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

pub struct Proxy {
    pub port: u16,
    upstream: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &'static str) -> Self {
        Self::start_on(upstream, 0).await
    }

    async fn start_on(upstream: &'static str, port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            port,
            upstream,
            task,
        }
    }

    /// Forwards again, on the same port, after [`Proxy::cut`]: the service
    /// came back.
    pub async fn restore(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        *self = Self::start_on(self.upstream, self.port).await;
    }

    /// Closes the listener and every forwarded connection: to the client it
    /// looks like the service went down.
    pub fn cut(&self) {
        self.task.abort();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
