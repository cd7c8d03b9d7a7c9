//! Sending a function's outbound request to the addresses its host name
//! was checked at: one connection per request, TLS when the scheme says so,
//! HTTP/1.1 over it.
//!
//! The connection goes to an address already checked, never to a name
//! resolved again, so a name rebound between the check and the connect
//! (DNS rebinding) reaches nothing new; TLS still verifies the certificate
//! against the name.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, WasiBody};

/// The future that finishes the exchange once the response is handed over
/// (`wasi:http` drives it and reports its error to the guest).
pub type Exchange = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// How long each step may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting, TLS and the HTTP handshake, over all addresses tried
    /// (the name's lookup before them has a bound of its own, the same).
    /// Only a refused or silent connection moves on to the next address:
    /// one that connects and then fails its TLS handshake fails the
    /// request.
    pub connect: Duration,
    /// From the request sent to the response's head.
    pub first_byte: Duration,
    /// Between two pieces of the response's body.
    pub between_bytes: Duration,
}

/// `request` sent to the first of `addresses` that accepts a connection
/// (over TLS to `tls`'s name when it is given), and its response.
pub async fn send(
    mut request: http::Request<WasiBody>,
    addresses: &[SocketAddr],
    tls: Option<(&tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeouts: Timeouts,
) -> Result<(http::Response<WasiBody>, Exchange), Error> {
    let deadline = tokio::time::Instant::now() + timeouts.connect;
    let stream = connect(addresses, deadline).await?;
    // Origin form on the wire: the scheme and authority are for a proxy
    // (the `Host` header, set by `wasi:http`, names the host).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    *request.uri_mut() = path;
    match tls {
        None => exchange(stream, request, deadline, timeouts).await,
        Some((connector, name)) => {
            let stream = tokio::time::timeout_at(deadline, connector.connect(name, stream))
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(tls_error)?;
            exchange(stream, request, deadline, timeouts).await
        }
    }
}

/// A connection to the first address that takes one, tried in order. Each
/// try gets an even share of the time left, so one address that never
/// answers leaves the next its turn.
async fn connect(
    addresses: &[SocketAddr],
    deadline: tokio::time::Instant,
) -> Result<TcpStream, Error> {
    let mut last = Error::DestinationNotFound;
    for (tried, address) in addresses.iter().enumerate() {
        let left = addresses.len() - tried;
        let now = tokio::time::Instant::now();
        let share = deadline.saturating_duration_since(now) / left as u32;
        match tokio::time::timeout(share, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                // Requests are small and answered at once; nothing to
                // gain from coalescing their segments.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(error)) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Ok(Err(error)) => last = Error::Connect(error),
            Err(_) => last = Error::ConnectionTimeout,
        }
    }
    Err(last)
}

/// The HTTP/1.1 exchange over a connected stream.
async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
    deadline: tokio::time::Instant,
    timeouts: Timeouts,
) -> Result<(http::Response<WasiBody>, Exchange), Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The connection does the reading and writing: it is polled while the
    // response is awaited, then handed to `wasi:http` to finish the body.
    let mut connection = Box::pin(connection);
    let mut closed = false;
    let response = {
        let response = sender.send_request(request);
        let first_byte = tokio::time::sleep(timeouts.first_byte);
        tokio::pin!(response, first_byte);
        loop {
            tokio::select! {
                biased;
                response = &mut response => break response.map_err(response_error)?,
                ended = &mut connection, if !closed => {
                    // Ended before the response: its error is the request's
                    // (a clean end leaves the response to report itself).
                    closed = true;
                    ended.map_err(response_error)?;
                }
                () = &mut first_byte => return Err(Error::ConnectionReadTimeout),
            }
        }
    };
    let (parts, body) = response.into_parts();
    let body = TimedBody {
        body,
        between_bytes: timeouts.between_bytes,
        idle: Box::pin(tokio::time::sleep(timeouts.between_bytes)),
    };
    let rest: Exchange = Box::new(async move {
        if !closed {
            connection.await.map_err(response_error)?;
        }
        Ok(())
    });
    Ok((http::Response::from_parts(parts, body.boxed_unsync()), rest))
}

/// A failed handshake as the error the guest can tell apart: the
/// certificate refused, an alert from the server, or anything else.
fn tls_error(error: std::io::Error) -> Error {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(_)) => Error::TlsCertificateError,
        Some(rustls::Error::AlertReceived(alert)) => Error::TlsAlertReceived {
            alert_id: Some(u8::from(*alert)),
            alert_message: Some(format!("{alert:?}")),
        },
        _ => Error::Tls(error),
    }
}

fn response_error(error: hyper::Error) -> Error {
    if error.is_timeout() {
        Error::HttpResponseTimeout
    } else {
        Error::Hyper(error)
    }
}

/// A response body that fails when nothing arrives for `between_bytes`.
struct TimedBody {
    body: hyper::body::Incoming,
    between_bytes: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = tokio::time::Instant::now() + self.between_bytes;
                self.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(response_error(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The name a server's certificate must carry: the URI's host, an address
/// when it is one.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    let bare = super::unbracketed(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => Ok(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(bare.to_owned()).map_err(|_| Error::HttpRequestUriInvalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/certs");

    fn timeouts(first_byte: Duration, between_bytes: Duration) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            first_byte,
            between_bytes,
        }
    }

    fn get(uri: &str) -> http::Request<WasiBody> {
        let empty = http_body_util::Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        http::Request::get(uri).body(empty).unwrap()
    }

    /// Reads a request's head off `stream`.
    async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// A loopback server that runs `serve` on its first connection.
    async fn server<F, Fut>(serve: F) -> SocketAddr
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream).await;
        });
        address
    }

    fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(format!("{CERTS}/localhost.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{CERTS}/localhost.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }

    /// An HTTPS server answering its request's first line and the name the
    /// client asked for.
    async fn tls_server() -> SocketAddr {
        let acceptor = tls_acceptor();
        server(|stream| async move {
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let head = read_head(&mut tls).await;
            let sni = tls.get_ref().1.server_name().unwrap_or("none").to_owned();
            let body = format!("{} sni={sni}", head.lines().next().unwrap_or_default());
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes()).await;
            let _ = tls.shutdown().await;
        })
        .await
    }

    async fn body_text(
        response: http::Response<WasiBody>,
        rest: Exchange,
    ) -> Result<String, Error> {
        tokio::spawn(Box::into_pin(rest));
        let body = response.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn https_goes_to_the_address_given_under_the_name_given() {
        // The URI's host cannot resolve: reaching the server at all shows
        // that nothing looked it up again.
        let address = tls_server().await;
        let ca = PathBuf::from(format!("{CERTS}/ca.pem"));
        let egress = super::super::Egress::new(vec![], &[ca]).unwrap();
        let name = server_name("localhost").unwrap();
        let (response, rest) = send(
            get(&format!("https://pinned.invalid:{}/x?y=1", address.port())),
            &[address],
            Some((&egress.tls, name)),
            timeouts(Duration::from_secs(5), Duration::from_secs(5)),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            body_text(response, rest).await.unwrap(),
            "GET /x?y=1 HTTP/1.1 sni=localhost"
        );
    }

    #[tokio::test]
    async fn a_certificate_from_an_unknown_authority_is_refused_as_such() {
        let address = tls_server().await;
        let egress = super::super::Egress::new(vec![], &[]).unwrap();
        let sent = send(
            get(&format!("https://localhost:{}/", address.port())),
            &[address],
            Some((&egress.tls, server_name("localhost").unwrap())),
            timeouts(Duration::from_secs(5), Duration::from_secs(5)),
        )
        .await;
        assert!(
            matches!(sent, Err(Error::TlsCertificateError)),
            "{:?}",
            sent.err()
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_before_and_during_the_body() {
        let short = Duration::from_millis(100);
        // Nothing ever answers.
        let address = server(|mut stream| async move {
            read_head(&mut stream).await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let uri = format!("http://localhost:{}/", address.port());
        let sent = send(get(&uri), &[address], None, timeouts(short, short)).await;
        assert!(
            matches!(sent, Err(Error::ConnectionReadTimeout)),
            "{:?}",
            sent.err()
        );
        // A head and part of the body, then nothing.
        let address = server(|mut stream| async move {
            read_head(&mut stream).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                .await;
            tokio::time::sleep(Duration::from_secs(30)).await;
        })
        .await;
        let uri = format!("http://localhost:{}/", address.port());
        let (response, rest) = send(get(&uri), &[address], None, timeouts(short, short))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(matches!(
            body_text(response, rest).await,
            Err(Error::ConnectionReadTimeout)
        ));
    }

    #[tokio::test]
    async fn a_server_that_hangs_up_is_an_error_not_a_wait() {
        let address = server(|mut stream| async move {
            read_head(&mut stream).await;
        })
        .await;
        let uri = format!("http://localhost:{}/", address.port());
        let long = Duration::from_secs(30);
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            send(get(&uri), &[address], None, timeouts(long, long)),
        )
        .await
        .expect("the request waited on a closed connection");
        assert!(matches!(sent, Err(Error::Hyper(_))), "{:?}", sent.err());
    }

    #[tokio::test]
    async fn an_address_that_refuses_leaves_the_next_its_turn() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // A port just freed: nothing listens there.
        let closed = {
            let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            spare.local_addr().unwrap()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let stream = connect(&[closed, open], deadline).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), open);
        assert!(matches!(
            connect(&[closed], deadline).await,
            Err(Error::ConnectionRefused)
        ));
        assert!(matches!(
            connect(&[], deadline).await,
            Err(Error::DestinationNotFound)
        ));
    }

    #[test]
    fn the_certificate_is_checked_against_the_host_as_written() {
        assert_eq!(
            server_name("api.example.com").unwrap(),
            ServerName::try_from("api.example.com").unwrap()
        );
        assert_eq!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress("::1".parse::<IpAddr>().unwrap().into())
        );
        assert_eq!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress("127.0.0.1".parse::<IpAddr>().unwrap().into())
        );
        assert!(server_name("bad name!").is_err());
    }
}
