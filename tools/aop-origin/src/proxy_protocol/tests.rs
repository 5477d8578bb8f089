use super::*;

use tokio::io::AsyncWriteExt as _;

/// A v2 header: `command` (0x20 LOCAL, 0x21 PROXY), `family` byte, then `body` (the
/// length is `body`'s unless `length` says otherwise).
fn v2(command: u8, family: u8, body: &[u8], length: Option<u16>) -> Vec<u8> {
    let mut h = v2::PROTOCOL_PREFIX.to_vec();
    h.extend_from_slice(&[command, family]);
    let len = length.unwrap_or(u16::try_from(body.len()).unwrap());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(body);
    h
}

/// A v2 TCP/IPv4 body: source 192.0.2.7:4321 to 198.51.100.1:443, then `tlvs`.
fn ipv4_body(tlvs: &[u8]) -> Vec<u8> {
    let mut b = vec![192, 0, 2, 7, 198, 51, 100, 1];
    b.extend_from_slice(&4321u16.to_be_bytes());
    b.extend_from_slice(&443u16.to_be_bytes());
    b.extend_from_slice(tlvs);
    b
}

fn named(addr: &str) -> Source {
    Source::Client(addr.parse().unwrap())
}

#[test]
fn v1_and_v2_headers_name_the_client_or_the_proxy() {
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\r\n\x16\x03\x01";
    assert_eq!(
        parse(v1),
        Parsed::Header {
            source: named("192.0.2.7:4321"),
            len: v1.len() - 3
        }
    );
    let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4321 443\r\n";
    assert_eq!(
        parse(v6),
        Parsed::Header {
            source: named("[2001:db8::7]:4321"),
            len: v6.len()
        }
    );
    let unknown = b"PROXY UNKNOWN\r\n";
    assert_eq!(
        parse(unknown),
        Parsed::Header {
            source: Source::Proxy,
            len: 15
        }
    );
    // v2 PROXY over TCP/IPv4, with a TLV (ignored), then the ClientHello's first byte.
    let mut h = v2(0x21, 0x11, &ipv4_body(&[0x04, 0, 1, 0x42]), None);
    let len = h.len();
    h.push(0x16);
    assert_eq!(
        parse(&h),
        Parsed::Header {
            source: named("192.0.2.7:4321"),
            len
        }
    );
    // LOCAL (a health check), an unspecified family, UDP, a UNIX family: the proxy's own.
    for h in [
        v2(0x20, 0x11, &ipv4_body(&[]), None),
        v2(0x21, 0x00, &[], None),
        v2(0x21, 0x12, &ipv4_body(&[]), None),
        v2(0x21, 0x31, &[0; 216], None),
    ] {
        assert_eq!(
            parse(&h),
            Parsed::Header {
                source: Source::Proxy,
                len: h.len()
            },
            "{h:?}"
        );
    }
}

#[test]
fn partial_headers_wait_and_bad_ones_are_refused() {
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\r\n";
    let v2h = v2(0x21, 0x11, &ipv4_body(&[]), None);
    for cut in 1..v1.len() {
        assert_eq!(parse(&v1[..cut]), Parsed::Incomplete, "v1 cut at {cut}");
    }
    for cut in 1..v2h.len() {
        assert_eq!(parse(&v2h[..cut]), Parsed::Incomplete, "v2 cut at {cut}");
    }
    for bad in [
        &b"\x16\x03\x01\x02\x00"[..],
        b"GET / HTTP/1.1\r\n",
        b"PROXY TCP4 999.0.2.7 198.51.100.1 4321 443\r\n",
        b"PROXY TCP4 2001:db8::7 198.51.100.1 4321 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 70000 443\r\n",
        b"PROXY TCP5 192.0.2.7 198.51.100.1 4321 443\r\n",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\n",
        &[b'P'; 200],
        b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\rX",
    ] {
        // One line, whatever ppp's message holds (its own says "\r\n" with the bytes).
        assert!(
            matches!(parse(bad), Parsed::Invalid(ref why) if !why.contains(['\r', '\n'])),
            "{:?}: {:?}",
            String::from_utf8_lossy(bad),
            parse(bad)
        );
    }
    // v1 without its CRLF within 107 bytes.
    let long = format!("PROXY UNKNOWN {}", "x".repeat(120));
    assert!(matches!(parse(long.as_bytes()), Parsed::Invalid(_)));
    // v2: a bad version, command, family; addresses longer than the length says.
    for bad in [
        v2(0x11, 0x11, &ipv4_body(&[]), None),
        v2(0x2f, 0x11, &ipv4_body(&[]), None),
        v2(0x21, 0x41, &ipv4_body(&[]), None),
        v2(0x21, 0x11, &ipv4_body(&[])[..6], None),
    ] {
        assert!(matches!(parse(&bad), Parsed::Invalid(_)), "{bad:?}");
    }
}

/// A connected pair on loopback: (the guard's end, the client's).
async fn pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    (listener.accept().await.unwrap().0, client)
}

/// Whatever follows the header stays for the TLS handshake: not one byte more is read,
/// however the header arrives.
#[tokio::test]
async fn read_takes_the_header_and_nothing_after_it() {
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 4321 443\r\n".to_vec();
    let v2h = v2(0x21, 0x11, &ipv4_body(&[0x04, 0, 1, 0x42]), None);
    for header in [v1, v2h] {
        for pieces in [1, 3, header.len()] {
            let (mut guard, mut client) = pair().await;
            let chunk = header.len().div_ceil(pieces);
            let writer = tokio::spawn({
                let header = header.clone();
                async move {
                    for piece in header.chunks(chunk) {
                        client.write_all(piece).await.unwrap();
                        client.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    client.write_all(b"\x16after").await.unwrap();
                    client
                }
            });
            assert_eq!(read(&mut guard).await, Ok(named("192.0.2.7:4321")));
            let _client = writer.await.unwrap();
            let mut rest = [0u8; 6];
            guard.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"\x16after", "{pieces} pieces");
        }
    }
}

#[tokio::test]
async fn read_refuses_a_huge_v2_length_unread_and_a_header_cut_short() {
    let (mut guard, mut client) = pair().await;
    client
        .write_all(&v2(0x21, 0x11, &ipv4_body(&[]), Some(65535)))
        .await
        .unwrap();
    let e = read(&mut guard).await.unwrap_err();
    assert!(
        e.contains("65551 bytes: more than the 2064 accepted"),
        "{e}"
    );

    let (mut guard, mut client) = pair().await;
    client.write_all(b"PROXY TCP4 192.0.2.7").await.unwrap();
    client.shutdown().await.unwrap();
    let e = read(&mut guard).await.unwrap_err();
    assert!(e.contains("ended after 20 bytes"), "{e}");

    let (mut guard, client) = pair().await;
    drop(client);
    let e = read(&mut guard).await.unwrap_err();
    assert!(e.contains("ended before a header"), "{e}");
}
