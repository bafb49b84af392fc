//! Static guest networking with the classic ioctls (no netlink, no tools in the image).
//! Every VM gets the same user-mode addressing: 10.0.2.15/24 on `eth0`, gateway
//! 10.0.2.2 (DNS 10.0.2.3 is written by the caller).

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::sys;

const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The NIC appears asynchronously after its driver probes.
const NIC_WAIT: Duration = Duration::from_secs(5);

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes plain integers; the result is checked.
    let fd =
        sys::cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &b) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = b as libc::c_char;
    }
    Ok(ifr)
}

fn sockaddr(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: both are 16-byte plain structs; the kernel reads it as sockaddr_in by family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl(fd: &OwnedFd, request: libc::Ioctl, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: callers pass a pointer to the struct `request` expects, live for the call.
    sys::cvt(unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) }).map(drop)
}

/// Sets IFF_UP (loopback gets 127.0.0.1 from the kernel when it comes up).
pub fn up(name: &str) -> io::Result<()> {
    let sock = inet_socket()?;
    let mut ifr = ifreq(name)?;
    ioctl(
        &sock,
        libc::SIOCGIFFLAGS,
        (&mut ifr as *mut libc::ifreq).cast(),
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        &sock,
        libc::SIOCSIFFLAGS,
        (&mut ifr as *mut libc::ifreq).cast(),
    )
}

/// The most a TCP receive window may grow to (`net.ipv4.tcp_rmem`'s maximum), instead of
/// the kernel's ~4-6 MiB. The guest's traffic reaches the host through pasta, and Debian 12's
/// pasta (passt 2023-03-09) sends its whole in-flight window again on each duplicate ACK: with
/// a window of more frames than the tap's queue holds (1000) one lost frame grows into a
/// storm of resends that the slow side (a guest under software emulation) never catches up
/// with, and a 100 MB download stalls for tens of seconds or for good. 256 KiB keeps a
/// window's burst inside the queue: 12 downloads of 100 MB from the host's loopback ran
/// at 25-30 MB/s with no frame dropped, where the default dropped millions and stalled
/// (`scripts/bench-net.sh`). It also bounds a download from far away to 256 KiB per round
/// trip. A user may raise it in the guest (`sysctl net.ipv4.tcp_rmem`).
pub const TCP_RMEM: &str = "4096 131072 262144";

/// Caps TCP receive windows at [`TCP_RMEM`].
pub fn limit_receive_window() -> io::Result<()> {
    std::fs::write("/proc/sys/net/ipv4/tcp_rmem", TCP_RMEM)
}

/// Waits for `eth0`, addresses it, brings it up and adds the default route.
pub fn configure_eth0() -> io::Result<()> {
    let start = Instant::now();
    while !Path::new("/sys/class/net/eth0").exists() {
        if start.elapsed() > NIC_WAIT {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("eth0 did not appear within {NIC_WAIT:?} (virtio_net not loaded?)"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let sock = inet_socket()?;
    let mut ifr = ifreq("eth0")?;
    ifr.ifr_ifru.ifru_addr = sockaddr(ADDRESS);
    ioctl(
        &sock,
        libc::SIOCSIFADDR,
        (&mut ifr as *mut libc::ifreq).cast(),
    )?;
    let mut ifr = ifreq("eth0")?;
    ifr.ifr_ifru.ifru_netmask = sockaddr(NETMASK);
    ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        (&mut ifr as *mut libc::ifreq).cast(),
    )?;
    up("eth0")?;

    let mut dev = *b"eth0\0";
    // SAFETY: rtentry is plain old data; all-zero is valid.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    rt.rt_gateway = sockaddr(GATEWAY);
    rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    rt.rt_dev = dev.as_mut_ptr().cast();
    match ioctl(
        &sock,
        libc::SIOCADDRT,
        (&mut rt as *mut libc::rtentry).cast(),
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}
