//! Which TCP ports a replica's own processes listen on, read from `/proc` (Linux only).
//!
//! The supervisor hands a replica's user process a port in `PORT` and probes it. Two faults are
//! caught with this module: the app listening on some other port than `PORT` (reported with
//! [`mismatch_message`]), and a foreign process holding the assigned port and answering the
//! probe in the replica's place (ruled out with [`owns_port`]).
//!
//! This runs every few tens of milliseconds per starting replica, so it reads only the given
//! pids' `fd` directories and one pair of `net/tcp` files. Read errors (a process that exited,
//! a directory we may not read) are skipped: every function returns what it could find and never
//! panics.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// At most this many pids are collected by [`process_tree`].
const MAX_TREE: usize = 4096;

/// The `st` value of a TCP socket in the LISTEN state in `/proc/net/tcp`.
const TCP_LISTEN: u8 = 0x0A;

/// `root` and all its descendants (children, grandchildren, …), `root` first, then in
/// breadth-first order; at most 4096 pids.
///
/// Children are read from `/proc/<pid>/task/<tid>/children` of every thread; when the kernel
/// does not provide that file (it needs `CONFIG_PROC_CHILDREN`), the parent of every process is
/// read from field 4 of `/proc/*/stat` instead. A `root` that does not exist gives an empty vec.
pub fn process_tree(root: u32) -> Vec<u32> {
    if fs::metadata(format!("/proc/{root}")).is_err() {
        return Vec::new();
    }
    let have_children_file = fs::metadata(format!("/proc/{root}/task/{root}/children")).is_ok();
    let by_parent = if have_children_file {
        None
    } else {
        Some(children_by_parent())
    };

    let mut tree = vec![root];
    let mut seen: HashSet<u32> = HashSet::from([root]);
    let mut queue = VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        let children = match &by_parent {
            Some(map) => map.get(&pid).cloned().unwrap_or_default(),
            None => children_from_tasks(pid),
        };
        for child in children {
            if tree.len() >= MAX_TREE {
                return tree;
            }
            if seen.insert(child) {
                tree.push(child);
                queue.push_back(child);
            }
        }
    }
    tree
}

/// The children of `pid`, from `/proc/<pid>/task/<tid>/children` of each of its threads (a
/// child belongs to the thread that forked it).
fn children_from_tasks(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let Ok(text) = fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        children.extend(
            text.split_ascii_whitespace()
                .filter_map(|s| s.parse::<u32>().ok()),
        );
    }
    children
}

/// Every process's children, keyed by parent pid, from a scan of `/proc/*/stat`.
fn children_by_parent() -> HashMap<u32, Vec<u32>> {
    let mut map: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = parse_stat_ppid(&stat) {
            map.entry(ppid).or_default().push(pid);
        }
    }
    for children in map.values_mut() {
        children.sort_unstable();
    }
    map
}

/// Field 4 (the parent pid) of a `/proc/<pid>/stat` line. Field 2, the command name in
/// parentheses, may itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// The TCP addresses in the LISTEN state whose sockets are held open by any of `pids`, sorted
/// and deduplicated.
///
/// Socket inodes are collected from the `socket:[INODE]` links in `/proc/<pid>/fd/` of every
/// pid; the sockets themselves are looked up in `/proc/<pid>/net/tcp` and `/proc/<pid>/net/tcp6`
/// of the first pid, that is in its network namespace (of the next pid if the first one's can no
/// longer be read).
pub fn listening_tcp(pids: &[u32]) -> Vec<SocketAddr> {
    let inodes: HashSet<u64> = pids.iter().flat_map(|&pid| socket_inodes(pid)).collect();
    if inodes.is_empty() {
        return Vec::new();
    }
    let mut addrs = match diag::listening() {
        Ok(listening) => listening
            .into_iter()
            .filter(|(_, inode)| inodes.contains(inode))
            .map(|(addr, _)| addr)
            .collect(),
        Err(_) => listening_from_proc(pids, &inodes),
    };
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

/// What [`listening_tcp`] reads when netlink is unavailable: `/proc/<pid>/net/tcp{,6}`.
fn listening_from_proc(pids: &[u32], inodes: &HashSet<u64>) -> Vec<SocketAddr> {
    let mut addrs = Vec::new();
    for &pid in pids {
        let v4 = fs::read_to_string(format!("/proc/{pid}/net/tcp"));
        let v6 = fs::read_to_string(format!("/proc/{pid}/net/tcp6"));
        if v4.is_err() && v6.is_err() {
            continue;
        }
        let rows = [(v4, false), (v6, true)]
            .into_iter()
            .filter_map(|(text, v6)| text.ok().map(|text| parse_net_tcp(&text, v6)))
            .flatten();
        addrs.extend(
            rows.filter(|&(_, inode, state)| state == TCP_LISTEN && inodes.contains(&inode))
                .map(|(addr, _, _)| addr),
        );
        break;
    }
    addrs
}

/// Listening TCP sockets from the kernel's `sock_diag` netlink interface, asking for the LISTEN
/// state only, so the kernel walks its listening table alone. Reading `/proc/net/tcp` walks
/// the whole established table, every bucket (262,144 on a 24 GiB machine): 7-9 ms per file,
/// on every replica's way to Ready.
mod diag {
    use std::io;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        setsockopt, socket, sockopt,
    };
    use nix::sys::time::TimeVal;

    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const HEADER: usize = 16;
    /// `struct inet_diag_msg`.
    const DIAG_MSG: usize = 72;
    /// No more than this many reads per family: a listening table is small.
    const MAX_READS: usize = 1024;

    /// Every listening TCP socket (IPv4 and IPv6) with its inode.
    pub(super) fn listening() -> io::Result<Vec<(SocketAddr, u64)>> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            dump(family, &mut out)?;
        }
        Ok(out)
    }

    fn dump(family: u8, out: &mut Vec<(SocketAddr, u64)>) -> io::Result<()> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(1, 0))?;
        // struct nlmsghdr, then struct inet_diag_req_v2: family, IPPROTO_TCP, no extensions,
        // states = 1 << TCP_LISTEN, and a zero socket id (any port, any address).
        let mut req = Vec::with_capacity(HEADER + 56);
        req.extend_from_slice(&((HEADER + 56) as u32).to_ne_bytes());
        req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[family, 6, 0, 0]);
        req.extend_from_slice(&(1u32 << 10).to_ne_bytes());
        req.extend_from_slice(&[0; 48]);
        sendto(
            fd.as_raw_fd(),
            &req,
            &NetlinkAddr::new(0, 0),
            MsgFlags::empty(),
        )?;
        let mut buf = vec![0u8; 32 * 1024];
        for _ in 0..MAX_READS {
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            if n == 0 {
                return Err(io::Error::other("sock_diag: empty read"));
            }
            if parse(&buf[..n], family, out)? {
                return Ok(());
            }
        }
        Err(io::Error::other("sock_diag: dump did not end"))
    }

    /// Adds the sockets in one read's messages to `out`; true once the dump is done.
    pub(super) fn parse(
        mut data: &[u8],
        family: u8,
        out: &mut Vec<(SocketAddr, u64)>,
    ) -> io::Result<bool> {
        let bad = || io::Error::other("sock_diag: malformed message");
        while !data.is_empty() {
            let header = data.get(..HEADER).ok_or_else(bad)?;
            let len = u32::from_ne_bytes(header[0..4].try_into().map_err(|_| bad())?) as usize;
            let kind = u16::from_ne_bytes(header[4..6].try_into().map_err(|_| bad())?);
            if len < HEADER || len > data.len() {
                return Err(bad());
            }
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => return Err(io::Error::other("sock_diag: the kernel refused")),
                SOCK_DIAG_BY_FAMILY => {
                    let msg = data[HEADER..len].get(..DIAG_MSG).ok_or_else(bad)?;
                    if msg[0] == family {
                        let port = u16::from_be_bytes([msg[4], msg[5]]);
                        let src: [u8; 16] = msg[8..24].try_into().map_err(|_| bad())?;
                        let ip: std::net::IpAddr = if family == AF_INET {
                            Ipv4Addr::new(src[0], src[1], src[2], src[3]).into()
                        } else {
                            Ipv6Addr::from(src).into()
                        };
                        let inode = u32::from_ne_bytes(msg[68..72].try_into().map_err(|_| bad())?);
                        out.push((SocketAddr::new(ip, port), u64::from(inode)));
                    }
                }
                _ => {}
            }
            let step = len.next_multiple_of(4).min(data.len());
            data = &data[step..];
        }
        Ok(false)
    }
}

/// The inodes of the sockets `pid` holds open, from the `socket:[INODE]` links in
/// `/proc/<pid>/fd/`.
fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| parse_socket_link(target.to_str()?))
        .collect()
}

/// The inode in a `socket:[INODE]` fd link target; `None` for anything else.
fn parse_socket_link(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The rows of a `/proc/net/tcp` (`v6` false) or `/proc/net/tcp6` (`v6` true) table: each
/// socket's local address, inode and state (`st`, `0x0A` for LISTEN). The header line and
/// malformed lines are skipped.
fn parse_net_tcp(text: &str, v6: bool) -> Vec<(SocketAddr, u64, u8)> {
    text.lines()
        .filter_map(|line| {
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if fields.len() < 10 || !fields[0].ends_with(':') {
                return None;
            }
            let addr = parse_hex_addr(fields[1], v6)?;
            let state = u8::from_str_radix(fields[3], 16).ok()?;
            let inode = fields[9].parse().ok()?;
            Some((addr, inode, state))
        })
        .collect()
}

/// A `HEXADDR:HEXPORT` address as the kernel prints it. The address is printed as 32-bit words
/// each in host byte order (one word for IPv4, four for IPv6), the port as a plain big-endian
/// number.
fn parse_hex_addr(field: &str, v6: bool) -> Option<SocketAddr> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = addr.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut octets = [0u8; 16];
        for i in 0..4 {
            octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(SocketAddrV6::new(Ipv6Addr::from(octets), port, 0, 0).into())
    } else {
        if addr.len() != 8 {
            return None;
        }
        Some(SocketAddrV4::new(Ipv4Addr::from(word(0)?), port).into())
    }
}

/// What is wrong when an app listens, but not on `port`: a message like `listening on
/// 127.0.0.1:8000, but PORT is 38745: listen on $PORT` (several addresses joined with `", "`).
///
/// `None` when any of `listening` is on `port`, and when `listening` is empty (the app has not
/// listened yet).
pub fn mismatch_message(listening: &[SocketAddr], port: u16) -> Option<String> {
    if listening.is_empty() || listening.iter().any(|addr| addr.port() == port) {
        return None;
    }
    let addrs: Vec<String> = listening.iter().map(ToString::to_string).collect();
    Some(format!(
        "listening on {}, but PORT is {port}: listen on $PORT",
        addrs.join(", ")
    ))
}

/// Whether one of `pids` listens on TCP `port`, on any address.
pub fn owns_port(pids: &[u32], port: u16) -> bool {
    listening_tcp(pids).iter().any(|addr| addr.port() == port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const NET_TCP: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 41299 1 0000000000000000 20 4 30 10 -1
   2: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1652 1 0000000000000000 100 0 0 10 0
   3: 020200C0:9FA4 507100CB:01BB 06 00000000:00000000 03:00000DA5 00000000     0        0 0 3 0000000000000000
garbage line
";

    const NET_TCP6: &str = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 52001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52002 1 0000000000000000 100 0 0 10 0
   2: 000080FE00000000FF005452D6B4A3FE:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 52003 1 0000000000000000 100 0 0 10 0
";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_ipv4_rows() {
        let rows = parse_net_tcp(NET_TCP, false);
        assert_eq!(
            rows,
            vec![
                (addr("127.0.0.1:8000"), 41234, TCP_LISTEN),
                (addr("127.0.0.1:8000"), 41299, 0x01),
                (addr("0.0.0.0:2024"), 1652, TCP_LISTEN),
                (addr("192.0.2.2:40868"), 0, 0x06),
            ]
        );
        let listening: Vec<_> = rows
            .iter()
            .filter(|r| r.2 == TCP_LISTEN)
            .map(|r| r.1)
            .collect();
        assert_eq!(
            listening,
            vec![41234, 1652],
            "ESTABLISHED row is not LISTEN"
        );
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn parses_ipv6_rows() {
        let rows = parse_net_tcp(NET_TCP6, true);
        assert_eq!(
            rows,
            vec![
                (addr("[::1]:8080"), 52001, TCP_LISTEN),
                (addr("[::]:80"), 52002, TCP_LISTEN),
                (addr("[fe80::5254:ff:fea3:b4d6]:22"), 52003, TCP_LISTEN),
            ]
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        assert_eq!(parse_hex_addr("0100007F", false), None);
        assert_eq!(parse_hex_addr("0100007:1F40", false), None);
        assert_eq!(parse_hex_addr("0100007F:1F40", true), None);
        assert_eq!(parse_hex_addr("0100007G:1F40", false), None);
        assert_eq!(parse_hex_addr("0100007F:1F400", false), None);
        assert!(parse_net_tcp("", false).is_empty());
    }

    #[test]
    fn parses_fd_links_and_stat() {
        assert_eq!(parse_socket_link("socket:[41234]"), Some(41234));
        assert_eq!(parse_socket_link("pipe:[41234]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(
            parse_stat_ppid("4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 ..."),
            Some(17)
        );
        assert_eq!(parse_stat_ppid("4242 (x"), None);
    }

    #[test]
    fn sock_diag_lists_listeners_not_connections() {
        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v6 = TcpListener::bind("[::1]:0").ok();
        let connected = std::net::TcpStream::connect(v4.local_addr().unwrap()).unwrap();
        let start = std::time::Instant::now();
        let listening = diag::listening().expect("sock_diag answers");
        let took = start.elapsed();
        let addrs: Vec<SocketAddr> = listening.iter().map(|(a, _)| *a).collect();
        assert!(addrs.contains(&v4.local_addr().unwrap()), "{addrs:?}");
        if let Some(v6) = &v6 {
            assert!(addrs.contains(&v6.local_addr().unwrap()), "{addrs:?}");
        }
        assert!(
            !addrs.contains(&connected.local_addr().unwrap()),
            "a connection is not a listener"
        );
        assert!(listening.iter().all(|(_, inode)| *inode > 0));
        eprintln!("sock_diag listed {} listeners in {took:?}", listening.len());
    }

    #[test]
    fn truncated_diag_messages_are_errors_not_panics() {
        let mut out = Vec::new();
        for len in [0u32, 8, 15, 16, 40, 4096] {
            let mut msg = len.to_ne_bytes().to_vec();
            msg.extend_from_slice(&20u16.to_ne_bytes());
            msg.extend_from_slice(&[0; 26]);
            for cut in 0..msg.len() {
                let _ = diag::parse(&msg[..cut], 2, &mut out);
            }
            let _ = diag::parse(&msg, 2, &mut out);
        }
        assert!(out.is_empty());
        let mut done = 16u32.to_ne_bytes().to_vec();
        done.extend_from_slice(&3u16.to_ne_bytes());
        done.extend_from_slice(&[0; 10]);
        assert!(diag::parse(&done, 2, &mut out).unwrap());
    }

    #[test]
    fn finds_own_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let me = [std::process::id()];

        assert!(listening_tcp(&me).contains(&local));
        assert!(owns_port(&me, local.port()));

        // A port that was free a moment ago, which no one in `me` listens on.
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let free = other.local_addr().unwrap().port();
        drop(other);
        assert!(!owns_port(&me, free));
        // Nor does a pid that does not exist own our port.
        assert!(!owns_port(&[u32::MAX], local.port()));
        assert!(listening_tcp(&[]).is_empty());
    }

    #[test]
    fn finds_own_ipv6_listener() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        let local = listener.local_addr().unwrap();
        assert!(listening_tcp(&[std::process::id()]).contains(&local));
    }

    #[test]
    fn process_tree_finds_child() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(me);
        let child_tree = process_tree(child.id());
        child.kill().unwrap();
        child.wait().unwrap();

        assert_eq!(tree.first(), Some(&me));
        assert!(tree.contains(&child.id()), "{tree:?} lacks {}", child.id());
        assert_eq!(child_tree, vec![child.id()]);
        let unique: HashSet<_> = tree.iter().collect();
        assert_eq!(unique.len(), tree.len());
    }

    #[test]
    fn process_tree_of_missing_root_is_empty() {
        assert!(process_tree(u32::MAX).is_empty());
    }

    #[test]
    fn mismatch_messages() {
        let py = addr("127.0.0.1:8000");
        assert_eq!(
            mismatch_message(&[py], 38745).as_deref(),
            Some("listening on 127.0.0.1:8000, but PORT is 38745: listen on $PORT")
        );
        assert_eq!(
            mismatch_message(&[py, addr("[::]:9000")], 38745).as_deref(),
            Some("listening on 127.0.0.1:8000, [::]:9000, but PORT is 38745: listen on $PORT")
        );
        assert_eq!(mismatch_message(&[py], 8000), None);
        assert_eq!(mismatch_message(&[addr("[::]:38745"), py], 38745), None);
        assert_eq!(mismatch_message(&[], 38745), None);
    }
}
