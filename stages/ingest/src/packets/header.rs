//! One captured frame read to its IP and TCP/UDP headers (etherparse); which workload it
//! belongs to is `PacketWorkload::matches` (in `config`).

use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::DataLink;

/// What the features need of one packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Capture time, microseconds since the epoch.
    pub ts_us: i64,
    /// Length on the wire.
    pub len: u32,
    pub src: Option<(IpAddr, u16)>,
    pub dst: Option<(IpAddr, u16)>,
    pub proto: Proto,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Other,
}

/// Reads a captured frame's headers; None when it is not IP at all or cannot be decoded.
pub fn decode(link: DataLink, ts_us: i64, len: u32, data: &[u8]) -> Option<Header> {
    let sliced = match link {
        DataLink::ETHERNET => SlicedPacket::from_ethernet(data).ok()?,
        DataLink::LINUX_SLL => SlicedPacket::from_linux_sll(data).ok()?,
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => SlicedPacket::from_ip(data).ok()?,
        // BSD loopback: a 4-byte address family, then IP.
        DataLink::NULL | DataLink::LOOP => SlicedPacket::from_ip(data.get(4..)?).ok()?,
        _ => return None,
    };
    let (sa, da): (IpAddr, IpAddr) = match sliced.net.as_ref()? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    let mut h = Header {
        ts_us,
        len,
        src: Some((sa, 0)),
        dst: Some((da, 0)),
        proto: Proto::Other,
        syn: false,
        fin: false,
        rst: false,
    };
    match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => {
            h.proto = Proto::Tcp;
            h.src = Some((sa, t.source_port()));
            h.dst = Some((da, t.destination_port()));
            (h.syn, h.fin, h.rst) = (t.syn(), t.fin(), t.rst());
        }
        Some(TransportSlice::Udp(u)) => {
            h.proto = Proto::Udp;
            h.src = Some((sa, u.source_port()));
            h.dst = Some((da, u.destination_port()));
        }
        _ => {}
    }
    Some(h)
}
