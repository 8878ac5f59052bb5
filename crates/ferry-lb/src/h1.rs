//! HTTP/1.1 towards backends, as pure functions over buffers: the request head, the response
//! head with its message framing (RFC 9112 §6.3), and the chunked decoder.
//!
//! The proxy speaks to backends with these directly on the request's own task (see
//! `client.rs`), instead of through a client that runs each backend connection as a task of its
//! own and hands requests, responses and body chunks over through channels.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

/// Most header fields a backend response may have.
pub(crate) const MAX_RESPONSE_HEADERS: usize = 100;

/// Longest chunk-size line (with extensions) and most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Appends a request head: `METHOD target HTTP/1.1`, the headers, `Host` when the headers lack
/// one, and `Transfer-Encoding: chunked` when the body is sent chunked.
///
/// Header values cannot hold CR or LF (`HeaderValue` refuses them) and the target comes from a
/// parsed URI, so nothing a client sends can add a line of its own.
pub(crate) fn encode_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    host: Option<&str>,
    chunked: bool,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(host) = host
        && !headers.contains_key(header::HOST)
    {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the framing of one chunk of a chunked body (`size CRLF data CRLF`) around `data`.
pub(crate) fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, without trailers.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a response to HEAD, a 204 or a 304.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body has been read.
    pub keep_alive: bool,
}

/// Why a response head was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum HeadError {
    #[error("response head larger than {0} bytes")]
    TooLarge(usize),
    #[error("more than {MAX_RESPONSE_HEADERS} response header fields")]
    TooManyHeaders,
    #[error("malformed response head: {0}")]
    Malformed(String),
    #[error("invalid Content-Length")]
    BadContentLength,
    #[error("the backend switched protocols (101), which the load balancer does not proxy")]
    Upgrade,
}

/// Parses the response head at the start of `buf`, skipping interim (1xx) responses. On success
/// the head's bytes are taken off `buf`, which then starts with the body. `Ok(None)`: the head is
/// not complete yet (interim responses already read are gone from `buf`).
pub(crate) fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
    max_head: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    loop {
        // Where each field's name and value sit in `buf`, so that the values can share the
        // buffer's memory once the head is split off.
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_RESPONSE_HEADERS];
        let (len, code, minor, count) = {
            // Left uninitialised: the parser writes the fields it finds (no 3 KiB of zeroes per
            // response).
            let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_RESPONSE_HEADERS];
            let mut response = httparse::Response::new(&mut []);
            let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut response,
                buf,
                &mut fields,
            );
            let len = match parsed {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) if buf.len() >= max_head => {
                    return Err(HeadError::TooLarge(max_head));
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
                Err(error) => return Err(HeadError::Malformed(error.to_string())),
            };
            if len > max_head {
                return Err(HeadError::TooLarge(max_head));
            }
            // Offsets fit in u32: the head is at most `max_head` bytes, checked above.
            let base = buf.as_ptr() as usize;
            let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
            for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
                let (name, value) = (offset(field.name.as_bytes()), offset(field.value));
                *span = (
                    name,
                    name + field.name.len() as u32,
                    value,
                    value + field.value.len() as u32,
                );
            }
            let code = response
                .code
                .ok_or_else(|| HeadError::Malformed("no status code".into()))?;
            (
                len,
                code,
                response.version.unwrap_or(1),
                response.headers.len(),
            )
        };
        if code == 101 {
            return Err(HeadError::Upgrade);
        }
        if (100..200).contains(&code) {
            // An interim response (100 Continue, 103 Early Hints): the final one follows.
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code)
            .map_err(|_| HeadError::Malformed(format!("status code {code}")))?;
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(count);
        for &(name_start, name_end, value_start, value_end) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[name_start as usize..name_end as usize])
                .map_err(|_| HeadError::Malformed("invalid header name".into()))?;
            let value = HeaderValue::from_maybe_shared(
                head.slice(value_start as usize..value_end as usize),
            )
            .map_err(|_| HeadError::Malformed(format!("invalid value of {name}")))?;
            headers.append(name, value);
        }
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let (framing, keep_alive) = framing(method, status, version, &headers)?;
        return Ok(Some(ResponseHead {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// The body's framing (RFC 9112 §6.3) and whether the connection stays open after it.
fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
) -> Result<(Framing, bool), HeadError> {
    let mut keep_alive = version == Version::HTTP_11;
    for token in tokens(headers, &header::CONNECTION) {
        if token.eq_ignore_ascii_case("close") {
            keep_alive = false;
        } else if token.eq_ignore_ascii_case("keep-alive") && version == Version::HTTP_10 {
            keep_alive = true;
        }
    }
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((Framing::Empty, keep_alive));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let last = tokens(headers, &header::TRANSFER_ENCODING).last();
        // A message with both framings may be an attempt at smuggling: read it the way the
        // standard says, and do not reuse the connection.
        if headers.contains_key(header::CONTENT_LENGTH) {
            keep_alive = false;
        }
        return Ok(match last {
            Some(coding) if coding.eq_ignore_ascii_case("chunked") => {
                (Framing::Chunked, keep_alive)
            }
            _ => (Framing::UntilClose, false),
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| HeadError::BadContentLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadContentLength);
            }
            let n: u64 = part.parse().map_err(|_| HeadError::BadContentLength)?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::BadContentLength);
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), keep_alive),
        None => (Framing::UntilClose, false),
    })
}

/// The comma-separated tokens of every `name` field, trimmed, empty ones skipped.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// What the chunked decoder made of the buffered bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The last chunk and the trailers have been read.
    Done,
}

/// Why a chunked body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk data not followed by CRLF")]
    MissingCrlf,
    #[error("chunk size line or trailers too long")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

/// Decodes a chunked body incrementally from a buffer that fills as bytes arrive; trailers are
/// read and dropped.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// True once the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Takes what it can from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(remaining)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    let rest = remaining - n as u64;
                    self.state = if rest == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(rest)
                    };
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    if line.is_empty() {
                        self.state = ChunkState::Done;
                    } else {
                        let seen = seen + line.len() + 2;
                        if seen > MAX_TRAILERS {
                            return Err(ChunkError::TooLong);
                        }
                        self.state = ChunkState::Trailers(seen);
                    }
                }
                ChunkState::Done => return Ok(Decoded::Done),
            }
        }
    }
}

/// Takes one line (without its CRLF or LF) off the front of `buf`, or `None` until a whole line
/// is there.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, ChunkError> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end > max => Err(ChunkError::TooLong),
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > max => Err(ChunkError::TooLong),
        None => Ok(None),
    }
}

/// The hexadecimal size at the start of a chunk-size line (extensions after `;` ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || matches!(rest[0], b';' | b' ' | b'\t');
    if digits == 0 || digits > 16 || !rest_ok {
        return Err(ChunkError::BadSize);
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| ChunkError::BadSize)?;
    u64::from_str_radix(text, 16).map_err(|_| ChunkError::BadSize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, method: Method) -> Result<Option<ResponseHead>, HeadError> {
        let mut buf = BytesMut::from(text.as_bytes());
        parse_response_head(&mut buf, &method, 8192)
    }

    #[test]
    fn request_head_has_every_header_a_host_when_missing_and_the_chunked_framing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-one", HeaderValue::from_static("1"));
        headers.append("x-one", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        encode_request_head(
            &mut out,
            &Method::POST,
            "/a?b=c",
            &headers,
            Some("10.0.0.1:80"),
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: 10.0.0.1:80\r\nx-one: 1\r\nx-one: 2\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        headers.insert(header::HOST, HeaderValue::from_static("shop.example"));
        let mut out = Vec::new();
        encode_request_head(&mut out, &Method::GET, "/", &headers, Some("x"), false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("host: shop.example\r\n"), "{text}");
        assert!(!text.contains("host: x\r\n"), "{text}");
        let mut chunk = Vec::new();
        encode_chunk(&mut chunk, &[b'a'; 26]);
        assert_eq!(chunk, [&b"1a\r\n"[..], &[b'a'; 26], b"\r\n"].concat());
    }

    #[test]
    fn response_head_is_split_off_and_the_body_stays_in_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello"[..],
        );
        let head = parse_response_head(&mut buf, &Method::GET, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_fail() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .unwrap()
                .is_none()
        );
        let mut big = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        big.extend_from_slice(&[b'a'; 200]);
        assert_eq!(
            parse_response_head(&mut big, &Method::GET, 100).unwrap_err(),
            HeadError::TooLarge(100)
        );
        let mut complete_but_big = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX: "[..]);
        complete_but_big.extend_from_slice(&[b'a'; 200]);
        complete_but_big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_response_head(&mut complete_but_big, &Method::GET, 100).unwrap_err(),
            HeadError::TooLarge(100)
        );
        assert!(matches!(
            parse("HTTP/1.1 2000 OK\r\n\r\n", Method::GET),
            Err(HeadError::Malformed(_))
        ));
        assert!(matches!(
            parse("garbage\r\n\r\n", Method::GET),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn interim_responses_are_skipped_and_101_is_refused() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
               HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"[..],
        );
        let head = parse_response_head(&mut buf, &Method::POST, 8192)
            .unwrap()
            .unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert!(head.headers.get("link").is_none());
        assert!(buf.is_empty());
        // An interim response whose final one has not arrived yet is consumed.
        let mut buf = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        assert!(
            parse_response_head(&mut buf, &Method::POST, 8192)
                .unwrap()
                .is_none()
        );
        assert_eq!(&buf[..], b"HTTP/1.1 2");
        assert_eq!(
            parse(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Method::GET
            )
            .unwrap_err(),
            HeadError::Upgrade
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n",
                Method::HEAD,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                Method::GET,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::GET,
                Framing::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                Framing::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                Method::GET,
                Framing::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Framing::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: Keep-Alive\r\n\r\n",
                Method::GET,
                Framing::Length(3),
                true,
            ),
        ];
        for (text, method, framing, keep_alive) in cases {
            let head = parse(text, method).unwrap().unwrap();
            assert_eq!(
                (head.framing, head.keep_alive),
                (framing, keep_alive),
                "{text}"
            );
        }
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad, Method::GET).unwrap_err(),
                HeadError::BadContentLength,
                "{bad}"
            );
        }
    }

    /// Decodes `input` fed in pieces of `step` bytes.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), ChunkError> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Decoded::Data(data) => body.extend_from_slice(&data),
                    Decoded::NeedMore => break,
                    Decoded::Done => return Ok((body, true, buf.len())),
                }
            }
        }
        Ok((body, decoder.is_done(), buf.len()))
    }

    #[test]
    fn chunked_bodies_decode_however_the_bytes_arrive() {
        let input = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64, input.len()] {
            let (body, done, left) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert!(done, "step {step}");
            // What follows the body is left for whoever reads next.
            assert!(left <= 4, "step {step}");
        }
        let (body, done, _) = decode_in_steps(b"3\r\nabc\r\n", 1).unwrap();
        assert_eq!((body.as_slice(), done), (&b"abc"[..], false));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        assert_eq!(
            decode_in_steps(b"zz\r\nabc\r\n0\r\n\r\n", 4).unwrap_err(),
            ChunkError::BadSize
        );
        assert_eq!(
            decode_in_steps(b"\r\n", 4).unwrap_err(),
            ChunkError::BadSize
        );
        assert_eq!(
            decode_in_steps(b"11111111111111111\r\n", 64).unwrap_err(),
            ChunkError::BadSize
        );
        assert_eq!(
            decode_in_steps(b"3\r\nabcX\r\n", 64).unwrap_err(),
            ChunkError::MissingCrlf
        );
        let long = [b'1'; MAX_CHUNK_LINE + 2];
        assert_eq!(
            decode_in_steps(&long, 1024).unwrap_err(),
            ChunkError::TooLong
        );
    }
}
