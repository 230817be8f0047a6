//! Each cluster owns one loopback /24 (127.A.B.0/24) for its Pods, so several clusters on one
//! machine never hand out the same Pod address. Ownership is an flock on a lock file, which the
//! kernel releases when the owning process dies, so crashed runs never leak blocks.

use std::collections::HashSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::error::ClusterError;

/// A reserved 127.A.B.0/24 block; dropped = released.
pub struct IpBlock {
    prefix: [u8; 3],
    _lock: File,
    next: u8,
}

impl IpBlock {
    /// Reserves a free block. Candidates start at a point derived from the process id so
    /// concurrent processes rarely contend for the same lock.
    pub fn reserve() -> Result<Self, ClusterError> {
        let dir = std::env::temp_dir().join("flywheel-ip-blocks");
        std::fs::create_dir_all(&dir).map_err(ClusterError::io(&dir))?;
        let start = (std::process::id() as usize).wrapping_mul(7919);
        // 127.100.0.0 - 127.199.255.0: far from 127.0.0.1 and from 127.0.1.1 (Debian's hostname entry).
        const BLOCKS: usize = 100 * 256;
        for i in 0..BLOCKS {
            let n = (start + i) % BLOCKS;
            let (a, b) = (100 + (n / 256) as u8, (n % 256) as u8);
            let path: PathBuf = dir.join(format!("127.{a}.{b}.lock"));
            let file = File::create(&path).map_err(ClusterError::io(&path))?;
            // SAFETY: flock on an fd we own.
            let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
            if locked && Self::bindable(Ipv4Addr::new(127, a, b, 2)) {
                return Ok(Self { prefix: [127, a, b], _lock: file, next: 2 });
            }
        }
        Err(ClusterError::NoAddressBlock("every 127.100-199.x.0/24 block is taken".into()))
    }

    fn bindable(ip: Ipv4Addr) -> bool {
        std::net::TcpListener::bind((ip, 0)).is_ok()
    }

    /// e.g. "127.123.45.0/24".
    pub fn cidr(&self) -> String {
        let [a, b, c] = self.prefix;
        format!("{a}.{b}.{c}.0/24")
    }

    /// Next address (.2 - .254) not in `in_use`, cycling so a freed address is reused last.
    pub fn allocate(&mut self, in_use: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        for _ in 0..253 {
            let candidate = Ipv4Addr::new(self.prefix[0], self.prefix[1], self.prefix[2], self.next);
            self.next = if self.next >= 254 { 2 } else { self.next + 1 };
            if !in_use.contains(&candidate) {
                return Some(candidate);
            }
        }
        None
    }
}
