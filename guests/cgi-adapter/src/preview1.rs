//! The preview-1 functions the program imports, exported with the signatures of
//! `wasi_snapshot_preview1`. Arguments and environment come from the request, fd 0-2 are the
//! request body, the CGI response and stderr, the preopens and files opened under them pass
//! through to `wasi:filesystem`; what has no meaning here (sockets, signals) says so.

#![allow(clippy::missing_safety_doc)]

use alloc::vec::Vec;

use crate::bindings::wasi::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorStat, DescriptorType, ErrorCode, NewTimestamp,
    OpenFlags, PathFlags,
};

use crate::state::{Fd, File, State};

type Errno = i32;

const SUCCESS: Errno = 0;
const ACCES: Errno = 2;
const AGAIN: Errno = 6;
const ALREADY: Errno = 7;
const BADF: Errno = 8;
const BUSY: Errno = 10;
const DEADLK: Errno = 16;
const DQUOT: Errno = 19;
const EXIST: Errno = 20;
const FBIG: Errno = 22;
const ILSEQ: Errno = 25;
const INPROGRESS: Errno = 26;
const INTR: Errno = 27;
const INVAL: Errno = 28;
const IO: Errno = 29;
const ISDIR: Errno = 31;
const LOOP: Errno = 32;
const MLINK: Errno = 34;
const MSGSIZE: Errno = 35;
const NAMETOOLONG: Errno = 37;
const NODEV: Errno = 43;
const NOENT: Errno = 44;
const NOLCK: Errno = 46;
const NOMEM: Errno = 48;
const NOSPC: Errno = 51;
const NOTDIR: Errno = 54;
const NOTEMPTY: Errno = 55;
const NOTRECOVERABLE: Errno = 56;
const NOTSUP: Errno = 58;
const NOTTY: Errno = 59;
const NXIO: Errno = 60;
const OVERFLOW: Errno = 61;
const PERM: Errno = 63;
const PIPE: Errno = 64;
const ROFS: Errno = 69;
const SPIPE: Errno = 70;
const TXTBSY: Errno = 74;
const XDEV: Errno = 75;

const FILETYPE_UNKNOWN: u8 = 0;
const FILETYPE_DIRECTORY: u8 = 3;

const RIGHTS_FD_READ: u64 = 1 << 1;
const RIGHTS_FD_WRITE: u64 = 1 << 6;
const RIGHTS_FD_READDIR: u64 = 1 << 14;

const FDFLAGS_APPEND: u32 = 1;
const OFLAGS_CREAT: u32 = 1;
const OFLAGS_DIRECTORY: u32 = 2;
const OFLAGS_EXCL: u32 = 4;
const OFLAGS_TRUNC: u32 = 8;
const LOOKUP_SYMLINK_FOLLOW: u32 = 1;

const FSTFLAGS_ATIM: u32 = 1;
const FSTFLAGS_ATIM_NOW: u32 = 2;
const FSTFLAGS_MTIM: u32 = 4;
const FSTFLAGS_MTIM_NOW: u32 = 8;

const CLOCK_REALTIME: u32 = 0;

/// Largest read at once: what comes back is a list the adapter allocates (a short read is
/// allowed, and programs read on).
const MAX_READ: usize = 32 * 1024;

fn errno(code: ErrorCode) -> Errno {
    match code {
        ErrorCode::Access => ACCES,
        ErrorCode::WouldBlock => AGAIN,
        ErrorCode::Already => ALREADY,
        ErrorCode::BadDescriptor => BADF,
        ErrorCode::Busy => BUSY,
        ErrorCode::Deadlock => DEADLK,
        ErrorCode::Quota => DQUOT,
        ErrorCode::Exist => EXIST,
        ErrorCode::FileTooLarge => FBIG,
        ErrorCode::IllegalByteSequence => ILSEQ,
        ErrorCode::InProgress => INPROGRESS,
        ErrorCode::Interrupted => INTR,
        ErrorCode::Invalid => INVAL,
        ErrorCode::Io => IO,
        ErrorCode::IsDirectory => ISDIR,
        ErrorCode::Loop => LOOP,
        ErrorCode::TooManyLinks => MLINK,
        ErrorCode::MessageSize => MSGSIZE,
        ErrorCode::NameTooLong => NAMETOOLONG,
        ErrorCode::NoDevice => NODEV,
        ErrorCode::NoEntry => NOENT,
        ErrorCode::NoLock => NOLCK,
        ErrorCode::InsufficientMemory => NOMEM,
        ErrorCode::InsufficientSpace => NOSPC,
        ErrorCode::NotDirectory => NOTDIR,
        ErrorCode::NotEmpty => NOTEMPTY,
        ErrorCode::NotRecoverable => NOTRECOVERABLE,
        ErrorCode::Unsupported => NOTSUP,
        ErrorCode::NoTty => NOTTY,
        ErrorCode::NoSuchDevice => NXIO,
        ErrorCode::Overflow => OVERFLOW,
        ErrorCode::NotPermitted => PERM,
        ErrorCode::Pipe => PIPE,
        ErrorCode::ReadOnly => ROFS,
        ErrorCode::InvalidSeek => SPIPE,
        ErrorCode::TextFileBusy => TXTBSY,
        ErrorCode::CrossDevice => XDEV,
    }
}

/// preview-1's lookup flags as wasi:filesystem's path flags.
fn path_flags(lookup: u32) -> PathFlags {
    if lookup & LOOKUP_SYMLINK_FOLLOW != 0 {
        PathFlags::SYMLINK_FOLLOW
    } else {
        PathFlags::empty()
    }
}

/// Runs `f`, turning its error into the errno it returns.
fn run(f: impl FnOnce() -> Result<(), Errno>) -> Errno {
    match f() {
        Ok(()) => SUCCESS,
        Err(e) => e,
    }
}

fn fd(fd: u32) -> Result<&'static mut Fd, Errno> {
    match State::get().fds.get_mut(fd as usize) {
        Some(Fd::Closed) | None => Err(BADF),
        Some(entry) => Ok(entry),
    }
}

fn file(fd_: u32) -> Result<&'static mut File, Errno> {
    match fd(fd_)? {
        Fd::File(file) => Ok(file),
        _ => Err(BADF),
    }
}

fn dir(fd_: u32) -> Result<&'static Descriptor, Errno> {
    match file(fd_)? {
        File {
            descriptor,
            directory: true,
            ..
        } => Ok(descriptor),
        _ => Err(NOTDIR),
    }
}

unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

unsafe fn path<'a>(ptr: *const u8, len: usize) -> Result<&'a str, Errno> {
    crate::text::utf8(unsafe { bytes(ptr, len) }).ok_or(ILSEQ)
}

#[repr(C)]
pub struct Iovec {
    buf: *mut u8,
    len: usize,
}

unsafe fn iovecs<'a>(ptr: *const Iovec, len: usize) -> &'a [Iovec] {
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

fn nanos(time: Option<crate::bindings::wasi::clocks::wall_clock::Datetime>) -> u64 {
    time.map_or(0, |t| t.seconds * 1_000_000_000 + t.nanoseconds as u64)
}

fn filetype(ty: DescriptorType) -> u8 {
    match ty {
        DescriptorType::BlockDevice => 1,
        DescriptorType::CharacterDevice => 2,
        DescriptorType::Directory => 3,
        DescriptorType::RegularFile => 4,
        DescriptorType::Socket => 6,
        DescriptorType::SymbolicLink => 7,
        DescriptorType::Unknown | DescriptorType::Fifo => 0,
    }
}

/// preview-1's `filestat`: dev, ino, filetype, nlink, size, atim, mtim, ctim.
#[repr(C)]
pub struct Filestat {
    dev: u64,
    ino: u64,
    filetype: u8,
    nlink: u64,
    size: u64,
    atim: u64,
    mtim: u64,
    ctim: u64,
}

fn filestat(stat: DescriptorStat, ino: u64) -> Filestat {
    Filestat {
        dev: 0,
        ino,
        filetype: filetype(stat.type_),
        nlink: stat.link_count,
        size: stat.size,
        atim: nanos(stat.data_access_timestamp),
        mtim: nanos(stat.data_modification_timestamp),
        ctim: nanos(stat.status_change_timestamp),
    }
}

// ---- arguments, environment, clocks, random -------------------------------------------

fn list(env: &crate::cgi::Env, array: *mut *const u8, buf: *mut u8) -> Errno {
    unsafe {
        core::ptr::copy_nonoverlapping(env.bytes.as_ptr(), buf, env.bytes.len());
        let mut at = 0;
        for (i, entry) in env.bytes.split_inclusive(|b| *b == 0).enumerate() {
            *array.add(i) = buf.add(at);
            at += entry.len();
        }
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn args_get(argv: *mut *const u8, buf: *mut u8) -> Errno {
    list(&State::get().args, argv, buf)
}

fn sizes(env: &crate::cgi::Env, count: *mut usize, size: *mut usize) -> Errno {
    unsafe {
        *count = env.count;
        *size = env.bytes.len();
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn args_sizes_get(count: *mut usize, size: *mut usize) -> Errno {
    sizes(&State::get().args, count, size)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn environ_get(environ: *mut *const u8, buf: *mut u8) -> Errno {
    list(&State::get().env, environ, buf)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn environ_sizes_get(count: *mut usize, size: *mut usize) -> Errno {
    sizes(&State::get().env, count, size)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_res_get(id: u32, resolution: *mut u64) -> Errno {
    let res = if id == CLOCK_REALTIME {
        let r = crate::bindings::wasi::clocks::wall_clock::resolution();
        r.seconds * 1_000_000_000 + r.nanoseconds as u64
    } else {
        crate::bindings::wasi::clocks::monotonic_clock::resolution()
    };
    unsafe { *resolution = res };
    SUCCESS
}

/// The CPU-time clocks read the monotonic clock: an instance runs one request on one thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_time_get(id: u32, _precision: u64, time: *mut u64) -> Errno {
    let now = if id == CLOCK_REALTIME {
        nanos(Some(crate::bindings::wasi::clocks::wall_clock::now()))
    } else if id <= 3 {
        crate::bindings::wasi::clocks::monotonic_clock::now()
    } else {
        return INVAL;
    };
    unsafe { *time = now };
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn random_get(buf: *mut u8, len: usize) -> Errno {
    let mut at = 0;
    while at < len {
        let word = crate::bindings::wasi::random::random::get_random_u64().to_le_bytes();
        let n = (len - at).min(8);
        unsafe { core::ptr::copy_nonoverlapping(word.as_ptr(), buf.add(at), n) };
        at += n;
    }
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_yield() -> Errno {
    SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proc_exit(code: u32) -> ! {
    // The response is completed first; then the instance ends as a command's does, which a
    // host tells apart from a trap. (Only success or failure: the status was logged.)
    State::get().finish(code);
    crate::bindings::wasi::cli::exit::exit(if code == 0 { Ok(()) } else { Err(()) });
    crate::trap()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proc_raise(_sig: u32) -> Errno {
    NOTSUP
}

// ---- reading and writing ---------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_write(
    fd_: u32,
    iovs: *const Iovec,
    iovs_len: usize,
    written: *mut usize,
) -> Errno {
    let iovs = unsafe { iovecs(iovs, iovs_len) };
    run(|| {
        let mut total = 0;
        match fd(fd_)? {
            Fd::Stdout => {
                let stdout = &mut State::get().stdout;
                for iov in iovs {
                    stdout.write(unsafe { bytes(iov.buf, iov.len) });
                    total += iov.len;
                }
            }
            Fd::Stderr => {
                for iov in iovs {
                    crate::state::write_stderr(unsafe { bytes(iov.buf, iov.len) });
                    total += iov.len;
                }
            }
            Fd::File(file) if !file.directory => {
                for iov in iovs {
                    let data = unsafe { bytes(iov.buf, iov.len) };
                    if file.append {
                        file.position = file.descriptor.stat().map_err(errno)?.size;
                    }
                    let n = file.descriptor.write(data, file.position).map_err(errno)?;
                    file.position += n;
                    total += n as usize;
                    if (n as usize) < data.len() {
                        break;
                    }
                }
            }
            Fd::File(_) => return Err(ISDIR),
            Fd::Stdin | Fd::Closed => return Err(BADF),
        }
        unsafe { *written = total };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_pwrite(
    fd_: u32,
    iovs: *const Iovec,
    iovs_len: usize,
    offset: u64,
    written: *mut usize,
) -> Errno {
    let iovs = unsafe { iovecs(iovs, iovs_len) };
    run(|| {
        let file = file(fd_)?;
        let mut total = 0u64;
        for iov in iovs {
            let data = unsafe { bytes(iov.buf, iov.len) };
            let n = file.descriptor.write(data, offset + total).map_err(errno)?;
            total += n;
            if (n as usize) < data.len() {
                break;
            }
        }
        unsafe { *written = total as usize };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_read(
    fd_: u32,
    iovs: *const Iovec,
    iovs_len: usize,
    read: *mut usize,
) -> Errno {
    let iovs = unsafe { iovecs(iovs, iovs_len) };
    run(|| {
        // One read at most: it fills the first buffer that has room.
        let Some(iov) = iovs.iter().find(|iov| iov.len > 0) else {
            unsafe { *read = 0 };
            return Ok(());
        };
        let n = match fd(fd_)? {
            Fd::Stdin => {
                let state = State::get();
                // A program that waits for its input has said what it has so far.
                state.stdout.flush();
                match &state.stdin {
                    Some((stream, _)) => match stream.blocking_read(iov.len.min(MAX_READ) as u64) {
                        Ok(data) => {
                            unsafe {
                                core::ptr::copy_nonoverlapping(data.as_ptr(), iov.buf, data.len())
                            };
                            data.len()
                        }
                        Err(_) => 0, // the end of the body
                    },
                    None => 0,
                }
            }
            Fd::File(file) if !file.directory => {
                let (data, _) = file
                    .descriptor
                    .read(iov.len.min(MAX_READ) as u64, file.position)
                    .map_err(errno)?;
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), iov.buf, data.len()) };
                file.position += data.len() as u64;
                data.len()
            }
            Fd::File(_) => return Err(ISDIR),
            _ => return Err(BADF),
        };
        unsafe { *read = n };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_pread(
    fd_: u32,
    iovs: *const Iovec,
    iovs_len: usize,
    offset: u64,
    read: *mut usize,
) -> Errno {
    let iovs = unsafe { iovecs(iovs, iovs_len) };
    run(|| {
        let file = file(fd_)?;
        let Some(iov) = iovs.iter().find(|iov| iov.len > 0) else {
            unsafe { *read = 0 };
            return Ok(());
        };
        let (data, _) = file
            .descriptor
            .read(iov.len.min(MAX_READ) as u64, offset)
            .map_err(errno)?;
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), iov.buf, data.len());
            *read = data.len();
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_seek(fd_: u32, offset: i64, whence: u32, new: *mut u64) -> Errno {
    run(|| {
        let Fd::File(file) = fd(fd_)? else {
            return Err(SPIPE);
        };
        let base = match whence {
            0 => 0,
            1 => file.position as i64,
            2 => file.descriptor.stat().map_err(errno)?.size as i64,
            _ => return Err(INVAL),
        };
        let position = base.checked_add(offset).filter(|p| *p >= 0).ok_or(INVAL)?;
        file.position = position as u64;
        unsafe { *new = file.position };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_tell(fd_: u32, position: *mut u64) -> Errno {
    unsafe { fd_seek(fd_, 0, 1, position) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_close(fd_: u32) -> Errno {
    run(|| {
        let entry = fd(fd_)?;
        if matches!(entry, Fd::Stdout) {
            // Closing stdout ends the response; the program may still run.
            State::get().stdout.finish(0);
        }
        *entry = Fd::Closed;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_renumber(from: u32, to: u32) -> Errno {
    run(|| {
        fd(from)?;
        fd(to)?;
        let fds = &mut State::get().fds;
        let moved = core::mem::replace(&mut fds[from as usize], Fd::Closed);
        fds[to as usize] = moved;
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_sync(fd_: u32) -> Errno {
    run(|| match fd(fd_)? {
        Fd::File(file) => file.descriptor.sync().map_err(errno),
        Fd::Stdout => {
            State::get().stdout.flush();
            Ok(())
        }
        _ => Ok(()),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_datasync(fd_: u32) -> Errno {
    run(|| match fd(fd_)? {
        Fd::File(file) => file.descriptor.sync_data().map_err(errno),
        _ => match unsafe { fd_sync(fd_) } {
            SUCCESS => Ok(()),
            e => Err(e),
        },
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_advise(fd_: u32, _offset: u64, _len: u64, _advice: u32) -> Errno {
    run(|| file(fd_).map(drop))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_allocate(fd_: u32, _offset: u64, _len: u64) -> Errno {
    run(|| {
        file(fd_)?;
        Err(NOTSUP)
    })
}

/// preview-1's `fdstat`: filetype, flags, rights.
#[repr(C)]
pub struct Fdstat {
    filetype: u8,
    flags: u16,
    rights_base: u64,
    rights_inheriting: u64,
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_fdstat_get(fd_: u32, stat: *mut Fdstat) -> Errno {
    run(|| {
        let (filetype, flags, rights) = match fd(fd_)? {
            // Not a terminal: the program buffers its output as it would into a pipe.
            Fd::Stdin => (FILETYPE_UNKNOWN, 0, RIGHTS_FD_READ),
            Fd::Stdout | Fd::Stderr => (FILETYPE_UNKNOWN, FDFLAGS_APPEND as u16, RIGHTS_FD_WRITE),
            Fd::File(file) => {
                let ty = if file.directory {
                    FILETYPE_DIRECTORY
                } else {
                    filetype(file.descriptor.get_type().map_err(errno)?)
                };
                let flags = file.descriptor.get_flags().map_err(errno)?;
                let mut rights = !0u64;
                if !flags.contains(DescriptorFlags::READ) {
                    rights &= !(RIGHTS_FD_READ | RIGHTS_FD_READDIR);
                }
                if !flags.contains(DescriptorFlags::WRITE) {
                    rights &= !RIGHTS_FD_WRITE;
                }
                (
                    ty,
                    if file.append {
                        FDFLAGS_APPEND as u16
                    } else {
                        0
                    },
                    rights,
                )
            }
            Fd::Closed => return Err(BADF),
        };
        unsafe {
            stat.write(Fdstat {
                filetype,
                flags,
                rights_base: rights,
                rights_inheriting: !0,
            })
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_fdstat_set_flags(fd_: u32, flags: u32) -> Errno {
    run(|| {
        // The streams are what they are; non-blocking is not offered.
        if let Fd::File(file) = fd(fd_)? {
            file.append = flags & FDFLAGS_APPEND != 0;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_fdstat_set_rights(fd_: u32, _base: u64, _inheriting: u64) -> Errno {
    run(|| fd(fd_).map(drop))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_filestat_get(fd_: u32, stat: *mut Filestat) -> Errno {
    run(|| {
        let result = match fd(fd_)? {
            Fd::File(file) => {
                let ino = file.descriptor.metadata_hash().map_or(0, |h| h.lower);
                filestat(file.descriptor.stat().map_err(errno)?, ino)
            }
            _ => Filestat {
                dev: 0,
                ino: 0,
                filetype: FILETYPE_UNKNOWN,
                nlink: 0,
                size: 0,
                atim: 0,
                mtim: 0,
                ctim: 0,
            },
        };
        unsafe { stat.write(result) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_filestat_set_size(fd_: u32, size: u64) -> Errno {
    run(|| file(fd_)?.descriptor.set_size(size).map_err(errno))
}

fn timestamp(time: u64, set: bool, now: bool) -> NewTimestamp {
    if now {
        NewTimestamp::Now
    } else if set {
        NewTimestamp::Timestamp(crate::bindings::wasi::clocks::wall_clock::Datetime {
            seconds: time / 1_000_000_000,
            nanoseconds: (time % 1_000_000_000) as u32,
        })
    } else {
        NewTimestamp::NoChange
    }
}

fn timestamps(atim: u64, mtim: u64, flags: u32) -> (NewTimestamp, NewTimestamp) {
    (
        timestamp(
            atim,
            flags & FSTFLAGS_ATIM != 0,
            flags & FSTFLAGS_ATIM_NOW != 0,
        ),
        timestamp(
            mtim,
            flags & FSTFLAGS_MTIM != 0,
            flags & FSTFLAGS_MTIM_NOW != 0,
        ),
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_filestat_set_times(
    fd_: u32,
    atim: u64,
    mtim: u64,
    flags: u32,
) -> Errno {
    run(|| {
        let (a, m) = timestamps(atim, mtim, flags);
        file(fd_)?.descriptor.set_times(a, m).map_err(errno)
    })
}

// ---- preopens and directories ----------------------------------------------------------

#[repr(C)]
pub struct Prestat {
    tag: u8,
    name_len: usize,
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_prestat_get(fd_: u32, prestat: *mut Prestat) -> Errno {
    run(|| match file(fd_)? {
        File {
            preopen: Some(path),
            ..
        } => {
            unsafe {
                prestat.write(Prestat {
                    tag: 0,
                    name_len: path.len(),
                })
            };
            Ok(())
        }
        _ => Err(BADF),
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_prestat_dir_name(fd_: u32, buf: *mut u8, len: usize) -> Errno {
    run(|| match file(fd_)? {
        File {
            preopen: Some(path),
            ..
        } => {
            if len < path.len() {
                return Err(NAMETOOLONG);
            }
            unsafe { core::ptr::copy_nonoverlapping(path.as_ptr(), buf, path.len()) };
            Ok(())
        }
        _ => Err(BADF),
    })
}

/// Directory entries from `cookie` on, as preview-1 `dirent`s (next cookie, inode, name
/// length, type, then the name), the last one cut off when the buffer ends, as preview-1
/// allows. Each call reads the directory from its start: cookies are entry positions.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_readdir(
    fd_: u32,
    buf: *mut u8,
    len: usize,
    cookie: u64,
    used: *mut usize,
) -> Errno {
    run(|| {
        let directory = dir(fd_)?;
        let stream = directory.read_directory().map_err(errno)?;
        let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
        let mut at = 0;
        let mut position = 0u64;
        while let Some(entry) = stream.read_directory_entry().map_err(errno)? {
            position += 1;
            if position <= cookie {
                continue;
            }
            let name = entry.name.as_bytes();
            let ino = directory
                .metadata_hash_at(PathFlags::empty(), &entry.name)
                .map_or(0, |h| h.lower);
            let mut record = Vec::with_capacity(24 + name.len());
            record.extend_from_slice(&position.to_le_bytes());
            record.extend_from_slice(&ino.to_le_bytes());
            record.extend_from_slice(&(name.len() as u32).to_le_bytes());
            record.extend_from_slice(&[filetype(entry.type_), 0, 0, 0]);
            record.extend_from_slice(name);
            let n = record.len().min(len - at);
            out[at..at + n].copy_from_slice(&record[..n]);
            at += n;
            if at == len {
                break;
            }
        }
        unsafe { *used = at };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_open(
    fd_: u32,
    lookup: u32,
    path_ptr: *const u8,
    path_len: usize,
    oflags: u32,
    rights: u64,
    _inheriting: u64,
    fdflags: u32,
    opened: *mut u32,
) -> Errno {
    run(|| {
        let path = unsafe { path(path_ptr, path_len)? };
        let directory = dir(fd_)?;
        let path_flags = path_flags(lookup);
        let mut open_flags = OpenFlags::empty();
        if oflags & OFLAGS_CREAT != 0 {
            open_flags |= OpenFlags::CREATE;
        }
        if oflags & OFLAGS_DIRECTORY != 0 {
            open_flags |= OpenFlags::DIRECTORY;
        }
        if oflags & OFLAGS_EXCL != 0 {
            open_flags |= OpenFlags::EXCLUSIVE;
        }
        if oflags & OFLAGS_TRUNC != 0 {
            open_flags |= OpenFlags::TRUNCATE;
        }
        let mut flags = DescriptorFlags::empty();
        if rights & (RIGHTS_FD_READ | RIGHTS_FD_READDIR) != 0 {
            flags |= DescriptorFlags::READ;
        }
        if rights & RIGHTS_FD_WRITE != 0 {
            flags |= DescriptorFlags::WRITE;
        }
        let descriptor = directory
            .open_at(path_flags, path, open_flags, flags)
            .map_err(errno)?;
        let is_dir = descriptor.get_type().map_err(errno)? == DescriptorType::Directory;
        let file = Fd::File(File {
            descriptor,
            position: 0,
            append: fdflags & FDFLAGS_APPEND != 0,
            directory: is_dir,
            preopen: None,
        });
        let fds = &mut State::get().fds;
        let slot = match fds.iter().position(|fd| matches!(fd, Fd::Closed)) {
            Some(slot) => {
                fds[slot] = file;
                slot
            }
            None => {
                fds.push(file);
                fds.len() - 1
            }
        };
        unsafe { *opened = slot as u32 };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_filestat_get(
    fd_: u32,
    lookup: u32,
    path_ptr: *const u8,
    path_len: usize,
    stat: *mut Filestat,
) -> Errno {
    run(|| {
        let path = unsafe { path(path_ptr, path_len)? };
        let flags = path_flags(lookup);
        let directory = dir(fd_)?;
        let result = directory.stat_at(flags, path).map_err(errno)?;
        let ino = directory
            .metadata_hash_at(flags, path)
            .map_or(0, |h| h.lower);
        unsafe { stat.write(filestat(result, ino)) };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_filestat_set_times(
    fd_: u32,
    lookup: u32,
    path_ptr: *const u8,
    path_len: usize,
    atim: u64,
    mtim: u64,
    flags: u32,
) -> Errno {
    run(|| {
        let path = unsafe { path(path_ptr, path_len)? };
        let path_flags = path_flags(lookup);
        let (a, m) = timestamps(atim, mtim, flags);
        dir(fd_)?
            .set_times_at(path_flags, path, a, m)
            .map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_create_directory(fd_: u32, ptr: *const u8, len: usize) -> Errno {
    run(|| {
        dir(fd_)?
            .create_directory_at(unsafe { path(ptr, len)? })
            .map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_remove_directory(fd_: u32, ptr: *const u8, len: usize) -> Errno {
    run(|| {
        dir(fd_)?
            .remove_directory_at(unsafe { path(ptr, len)? })
            .map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_unlink_file(fd_: u32, ptr: *const u8, len: usize) -> Errno {
    run(|| {
        dir(fd_)?
            .unlink_file_at(unsafe { path(ptr, len)? })
            .map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_rename(
    old_fd: u32,
    old_ptr: *const u8,
    old_len: usize,
    new_fd: u32,
    new_ptr: *const u8,
    new_len: usize,
) -> Errno {
    run(|| {
        let (old, new) = unsafe { (path(old_ptr, old_len)?, path(new_ptr, new_len)?) };
        dir(old_fd)?
            .rename_at(old, dir(new_fd)?, new)
            .map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_link(
    old_fd: u32,
    lookup: u32,
    old_ptr: *const u8,
    old_len: usize,
    new_fd: u32,
    new_ptr: *const u8,
    new_len: usize,
) -> Errno {
    run(|| {
        let (old, new) = unsafe { (path(old_ptr, old_len)?, path(new_ptr, new_len)?) };
        let flags = path_flags(lookup);
        dir(old_fd)?
            .link_at(flags, old, dir(new_fd)?, new)
            .map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_symlink(
    old_ptr: *const u8,
    old_len: usize,
    fd_: u32,
    new_ptr: *const u8,
    new_len: usize,
) -> Errno {
    run(|| {
        let (old, new) = unsafe { (path(old_ptr, old_len)?, path(new_ptr, new_len)?) };
        dir(fd_)?.symlink_at(old, new).map_err(errno)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn path_readlink(
    fd_: u32,
    ptr: *const u8,
    len: usize,
    buf: *mut u8,
    buf_len: usize,
    used: *mut usize,
) -> Errno {
    run(|| {
        let target = dir(fd_)?
            .readlink_at(unsafe { path(ptr, len)? })
            .map_err(errno)?;
        let n = target.len().min(buf_len);
        unsafe {
            core::ptr::copy_nonoverlapping(target.as_ptr(), buf, n);
            *used = n;
        }
        Ok(())
    })
}

// ---- waiting ---------------------------------------------------------------------------

#[repr(C)]
pub struct Subscription {
    userdata: u64,
    tag: u8,
    // clock: id (u32) at 16, timeout (u64) at 24, precision at 32, flags (u16) at 40;
    // fd_read / fd_write: fd (u32) at 16.
    contents: [u64; 4],
}

#[repr(C)]
pub struct Event {
    userdata: u64,
    error: u16,
    kind: u8,
    nbytes: u64,
    flags: u16,
}

/// Files and streams count as ready at once (a read then blocks until data comes); without
/// any, the earliest clock is waited for.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll_oneoff(
    subscriptions: *const Subscription,
    events: *mut Event,
    count: usize,
    written: *mut usize,
) -> Errno {
    if count == 0 {
        return INVAL;
    }
    let subscriptions = unsafe { core::slice::from_raw_parts(subscriptions, count) };
    let events = unsafe { core::slice::from_raw_parts_mut(events, count) };
    State::get().stdout.flush();
    let mut n = 0;
    for s in subscriptions.iter().filter(|s| s.tag != 0) {
        events[n] = Event {
            userdata: s.userdata,
            error: 0,
            kind: s.tag,
            nbytes: 0,
            flags: 0,
        };
        n += 1;
    }
    if n == 0 {
        // Every subscription is a clock: sleep until the first one is due.
        let now_wall = nanos(Some(crate::bindings::wasi::clocks::wall_clock::now()));
        let now = crate::bindings::wasi::clocks::monotonic_clock::now();
        let due = |s: &Subscription| {
            let id = s.contents[0] as u32;
            let timeout = s.contents[1];
            let absolute = s.contents[3] as u16 & 1 != 0;
            match (absolute, id == CLOCK_REALTIME) {
                (false, _) => timeout,
                (true, true) => timeout.saturating_sub(now_wall),
                (true, false) => timeout.saturating_sub(now),
            }
        };
        let Some(first) = subscriptions.iter().min_by_key(|s| due(s)) else {
            return INVAL;
        };
        crate::bindings::wasi::clocks::monotonic_clock::subscribe_duration(due(first)).block();
        events[0] = Event {
            userdata: first.userdata,
            error: 0,
            kind: 0,
            nbytes: 0,
            flags: 0,
        };
        n = 1;
    }
    unsafe { *written = n };
    SUCCESS
}

// ---- sockets: none here -----------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_accept(_fd: u32, _flags: u32, _new: *mut u32) -> Errno {
    NOTSUP
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_recv(
    _fd: u32,
    _iovs: *const Iovec,
    _iovs_len: usize,
    _flags: u32,
    _len: *mut usize,
    _out_flags: *mut u16,
) -> Errno {
    NOTSUP
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_send(
    _fd: u32,
    _iovs: *const Iovec,
    _iovs_len: usize,
    _flags: u32,
    _len: *mut usize,
) -> Errno {
    NOTSUP
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_shutdown(_fd: u32, _how: u32) -> Errno {
    NOTSUP
}
