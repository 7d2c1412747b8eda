//! A TCP proxy between a service under test and a real server (the broker,
//! MongoDB), for the faults a network or a restart brings while the server
//! itself stays up for everyone else: [`TcpProxy::cut`] breaks every
//! connection through it at once (a broker restart, a lost path), while
//! new ones go through again; [`TcpProxy::set_down`] refuses new ones and
//! closes the open ones; [`TcpProxy::stall`] holds them open and moves
//! nothing (a blocked broker, a network that drops packets).

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Stalled,
    Down,
}

/// The proxy's state: its mode, and a count of cuts (every pipe opened
/// before a cut ends with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    mode: Mode,
    cuts: u64,
}

/// A running proxy; dropping it stops taking connections.
pub struct TcpProxy {
    port: u16,
    state: watch::Sender<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free local port and forwards each connection to
    /// `upstream` (`host:port`).
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let (state, _) = watch::channel(State {
            mode: Mode::Open,
            cuts: 0,
        });
        let (upstream, watcher) = (upstream.to_owned(), state.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let now = *watcher.borrow();
                if now.mode == Mode::Down {
                    continue;
                }
                tokio::spawn(pipe(
                    client,
                    upstream.clone(),
                    watcher.subscribe(),
                    now.cuts,
                ));
            }
        });
        TcpProxy {
            port,
            state,
            accept,
        }
    }

    /// A proxy to the broker of `url` (an AMQP URL).
    pub async fn to_broker_of(url: &str) -> TcpProxy {
        TcpProxy::start(&authority_of(url, 5672)).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `url` with its `host:port` replaced by the proxy's, user and path
    /// kept (AMQP and MongoDB URLs: `scheme://[user@]host:port/...`).
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((user, _)) => format!("{scheme}://{user}@127.0.0.1:{}{path}", self.port),
            None => format!("{scheme}://127.0.0.1:{}{path}", self.port),
        }
    }

    /// Breaks every connection open through the proxy now; new ones go
    /// through.
    pub fn cut(&self) {
        self.state.send_modify(|state| state.cuts += 1);
    }

    /// Down: closes the open connections and refuses new ones; up again:
    /// takes them.
    pub fn set_down(&self, down: bool) {
        self.state.send_modify(|state| {
            state.mode = if down { Mode::Down } else { Mode::Open };
        });
    }

    /// Holds every connection (new ones too) open and moves nothing until
    /// [`TcpProxy::set_down`] says otherwise; they then close.
    pub fn stall(&self) {
        self.state.send_modify(|state| state.mode = Mode::Stalled);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Carries one connection until a cut after `born` or the proxy going
/// down. A stall holds it open, moving nothing, and it closes when the
/// stall ends.
async fn pipe(
    mut client: TcpStream,
    upstream: String,
    mut state: watch::Receiver<State>,
    born: u64,
) {
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let over = move |now: &State| now.cuts != born || now.mode == Mode::Down;
    let open = state.borrow().mode == Mode::Open;
    if open {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = state.wait_for(|now| over(now) || now.mode == Mode::Stalled) => {}
        }
    }
    let held = {
        let now = state.borrow();
        now.mode == Mode::Stalled && !over(&now)
    };
    if held {
        let _ = state
            .wait_for(|now| over(now) || now.mode != Mode::Stalled)
            .await;
    }
}

/// The `host:port` of an AMQP or MongoDB URL (defaulting the port).
pub fn authority_of(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_address_is_read_from_its_url() {
        assert_eq!(
            authority_of("amqp://guest:guest@127.0.0.1:5672/%2f", 5672),
            "127.0.0.1:5672"
        );
        assert_eq!(
            authority_of("mongodb://db.example/?x=1", 27017),
            "db.example:27017"
        );
    }

    #[tokio::test]
    async fn cut_breaks_open_connections_and_lets_new_ones_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let upstream = echo.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = socket.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        let proxy = TcpProxy::start(&upstream).await;
        assert_eq!(
            proxy.url_for("amqp://u:p@host:5672/%2f"),
            format!("amqp://u:p@127.0.0.1:{}/%2f", proxy.port())
        );
        let mut first = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        let mut buffer = [0u8; 2];
        first.write_all(b"hi").await.expect("write");
        first.read_exact(&mut buffer).await.expect("echo");
        assert_eq!(&buffer, b"hi");

        proxy.cut();

        let read = tokio::time::timeout(std::time::Duration::from_secs(5), first.read(&mut buffer))
            .await
            .expect("the cut connection ends");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let mut second = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .expect("connect");
        second.write_all(b"ok").await.expect("write");
        second.read_exact(&mut buffer).await.expect("echo");
        assert_eq!(&buffer, b"ok");
    }
}
