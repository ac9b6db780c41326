//! A TCP relay a test puts in front of a dependency (a KMS API server, say) to take it away
//! and bring it back without restarting it, so whatever state it holds survives the outage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::{JoinHandle, JoinSet};

/// Forwards connections on [`TcpRelay::addr`] to a target while open. Cut, it resets every
/// relayed connection and closes each new one at once, as a dependency that went away does.
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: JoinHandle<()>,
}

impl TcpRelay {
    /// Starts relaying to `target` on a free loopback port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a relay");
        let addr = listener.local_addr().expect("relay address");
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = tokio::spawn({
            let open = open.clone();
            let connections = connections.clone();
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    connections.lock().await.spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }
        });
        Self {
            addr,
            open,
            connections,
            accept,
        }
    }

    /// Starts relaying to the `http://host:port` a URL names.
    pub async fn start_for_url(url: &str) -> Self {
        let host_port = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let target = tokio::net::lookup_host(&host_port)
            .await
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("{url} is not http://<host>:<port>"));
        Self::start(target).await
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes the target away: every relayed connection is cut, every new one closed.
    pub async fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut connections = self.connections.lock().await;
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }

    /// Brings the target back.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
