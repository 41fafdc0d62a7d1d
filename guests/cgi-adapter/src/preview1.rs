//! The preview-1 functions the program imports, exported with the signatures of
//! `wasi_snapshot_preview1`. Arguments and environment come from the request, fd 0-2 are the
//! request body, the CGI response and stderr, the preopens and files opened under them pass
//! through to `wasi:filesystem`; what has no meaning here (sockets, signals) says so.

#![allow(clippy::missing_safety_doc)]

use alloc::vec::Vec;
use core::mem::MaybeUninit;

use crate::bindings::wasi::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorStat, DescriptorType, ErrorCode, NewTimestamp,
    OpenFlags, PathFlags,
};

use crate::state::{Fd, File, State};

use wasip1::{
    Advice, CLOCKID_MONOTONIC, CLOCKID_PROCESS_CPUTIME_ID, CLOCKID_REALTIME,
    CLOCKID_THREAD_CPUTIME_ID, Ciovec, Clockid, Dirent, ERRNO_ACCES, ERRNO_AGAIN, ERRNO_ALREADY,
    ERRNO_BADF, ERRNO_BUSY, ERRNO_DEADLK, ERRNO_DQUOT, ERRNO_EXIST, ERRNO_FBIG, ERRNO_ILSEQ,
    ERRNO_INPROGRESS, ERRNO_INTR, ERRNO_INVAL, ERRNO_IO, ERRNO_ISDIR, ERRNO_LOOP, ERRNO_MLINK,
    ERRNO_MSGSIZE, ERRNO_NAMETOOLONG, ERRNO_NODEV, ERRNO_NOENT, ERRNO_NOLCK, ERRNO_NOMEM,
    ERRNO_NOSPC, ERRNO_NOTDIR, ERRNO_NOTEMPTY, ERRNO_NOTRECOVERABLE, ERRNO_NOTSUP, ERRNO_NOTTY,
    ERRNO_NXIO, ERRNO_OVERFLOW, ERRNO_PERM, ERRNO_PIPE, ERRNO_ROFS, ERRNO_SPIPE, ERRNO_SUCCESS,
    ERRNO_TXTBSY, ERRNO_XDEV, EVENTTYPE_CLOCK, EVENTTYPE_FD_READ, EVENTTYPE_FD_WRITE, Errno, Event,
    EventFdReadwrite, Eventtype, Exitcode, FDFLAGS_APPEND, FILETYPE_BLOCK_DEVICE,
    FILETYPE_CHARACTER_DEVICE, FILETYPE_DIRECTORY, FILETYPE_REGULAR_FILE, FILETYPE_SOCKET_STREAM,
    FILETYPE_SYMBOLIC_LINK, FILETYPE_UNKNOWN, FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW, FSTFLAGS_MTIM,
    FSTFLAGS_MTIM_NOW, Fdflags, Fdstat, Filestat, Filetype, Fstflags, Iovec,
    LOOKUPFLAGS_SYMLINK_FOLLOW, Lookupflags, OFLAGS_CREAT, OFLAGS_DIRECTORY, OFLAGS_EXCL,
    OFLAGS_TRUNC, Oflags, PREOPENTYPE_DIR, Prestat, PrestatDir, PrestatU, RIGHTS_FD_READ,
    RIGHTS_FD_READDIR, RIGHTS_FD_WRITE, Riflags, Rights, Roflags,
    SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME, Sdflags, Siflags, Signal, Subscription, WHENCE_CUR,
    WHENCE_END, WHENCE_SET, Whence,
};

/// Largest read at once: what comes back is a list the adapter allocates (a short read is
/// allowed, and programs read on).
const MAX_READ: usize = 32 * 1024;

fn errno(code: ErrorCode) -> Errno {
    match code {
        ErrorCode::Access => ERRNO_ACCES,
        ErrorCode::WouldBlock => ERRNO_AGAIN,
        ErrorCode::Already => ERRNO_ALREADY,
        ErrorCode::BadDescriptor => ERRNO_BADF,
        ErrorCode::Busy => ERRNO_BUSY,
        ErrorCode::Deadlock => ERRNO_DEADLK,
        ErrorCode::Quota => ERRNO_DQUOT,
        ErrorCode::Exist => ERRNO_EXIST,
        ErrorCode::FileTooLarge => ERRNO_FBIG,
        ErrorCode::IllegalByteSequence => ERRNO_ILSEQ,
        ErrorCode::InProgress => ERRNO_INPROGRESS,
        ErrorCode::Interrupted => ERRNO_INTR,
        ErrorCode::Invalid => ERRNO_INVAL,
        ErrorCode::Io => ERRNO_IO,
        ErrorCode::IsDirectory => ERRNO_ISDIR,
        ErrorCode::Loop => ERRNO_LOOP,
        ErrorCode::TooManyLinks => ERRNO_MLINK,
        ErrorCode::MessageSize => ERRNO_MSGSIZE,
        ErrorCode::NameTooLong => ERRNO_NAMETOOLONG,
        ErrorCode::NoDevice => ERRNO_NODEV,
        ErrorCode::NoEntry => ERRNO_NOENT,
        ErrorCode::NoLock => ERRNO_NOLCK,
        ErrorCode::InsufficientMemory => ERRNO_NOMEM,
        ErrorCode::InsufficientSpace => ERRNO_NOSPC,
        ErrorCode::NotDirectory => ERRNO_NOTDIR,
        ErrorCode::NotEmpty => ERRNO_NOTEMPTY,
        ErrorCode::NotRecoverable => ERRNO_NOTRECOVERABLE,
        ErrorCode::Unsupported => ERRNO_NOTSUP,
        ErrorCode::NoTty => ERRNO_NOTTY,
        ErrorCode::NoSuchDevice => ERRNO_NXIO,
        ErrorCode::Overflow => ERRNO_OVERFLOW,
        ErrorCode::NotPermitted => ERRNO_PERM,
        ErrorCode::Pipe => ERRNO_PIPE,
        ErrorCode::ReadOnly => ERRNO_ROFS,
        ErrorCode::InvalidSeek => ERRNO_SPIPE,
        ErrorCode::TextFileBusy => ERRNO_TXTBSY,
        ErrorCode::CrossDevice => ERRNO_XDEV,
    }
}

/// preview-1's lookup flags as wasi:filesystem's path flags.
fn path_flags(lookup: Lookupflags) -> PathFlags {
    if lookup & LOOKUPFLAGS_SYMLINK_FOLLOW != 0 {
        PathFlags::SYMLINK_FOLLOW
    } else {
        PathFlags::empty()
    }
}

/// Runs `f`, turning its error into the errno it returns.
fn run(f: impl FnOnce() -> Result<(), Errno>) -> Errno {
    match f() {
        Ok(()) => ERRNO_SUCCESS,
        Err(e) => e,
    }
}

fn fd(fd: u32) -> Result<&'static mut Fd, Errno> {
    match State::get().fds.get_mut(fd as usize) {
        Some(Fd::Closed) | None => Err(ERRNO_BADF),
        Some(entry) => Ok(entry),
    }
}

fn file(fd_: u32) -> Result<&'static mut File, Errno> {
    match fd(fd_)? {
        Fd::File(file) => Ok(file),
        _ => Err(ERRNO_BADF),
    }
}

fn dir(fd_: u32) -> Result<&'static Descriptor, Errno> {
    match file(fd_)? {
        File {
            descriptor,
            directory: true,
            ..
        } => Ok(descriptor),
        _ => Err(ERRNO_NOTDIR),
    }
}

unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

unsafe fn path<'a>(ptr: *const u8, len: usize) -> Result<&'a str, Errno> {
    crate::text::utf8(unsafe { bytes(ptr, len) }).ok_or(ERRNO_ILSEQ)
}

unsafe fn iovecs<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    unsafe { core::slice::from_raw_parts(ptr, len) }
}

fn nanos(time: Option<crate::bindings::wasi::clocks::wall_clock::Datetime>) -> u64 {
    time.map_or(0, |t| t.seconds * 1_000_000_000 + t.nanoseconds as u64)
}

fn filetype(ty: DescriptorType) -> Filetype {
    match ty {
        DescriptorType::BlockDevice => FILETYPE_BLOCK_DEVICE,
        DescriptorType::CharacterDevice => FILETYPE_CHARACTER_DEVICE,
        DescriptorType::Directory => FILETYPE_DIRECTORY,
        DescriptorType::RegularFile => FILETYPE_REGULAR_FILE,
        DescriptorType::Socket => FILETYPE_SOCKET_STREAM,
        DescriptorType::SymbolicLink => FILETYPE_SYMBOLIC_LINK,
        DescriptorType::Unknown | DescriptorType::Fifo => FILETYPE_UNKNOWN,
    }
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
    ERRNO_SUCCESS
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
    ERRNO_SUCCESS
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
pub unsafe extern "C" fn clock_res_get(id: Clockid, resolution: *mut u64) -> Errno {
    let res = if id == CLOCKID_REALTIME {
        let r = crate::bindings::wasi::clocks::wall_clock::resolution();
        r.seconds * 1_000_000_000 + r.nanoseconds as u64
    } else {
        crate::bindings::wasi::clocks::monotonic_clock::resolution()
    };
    unsafe { *resolution = res };
    ERRNO_SUCCESS
}

/// The CPU-time clocks read the monotonic clock: an instance runs one request on one thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_time_get(id: Clockid, _precision: u64, time: *mut u64) -> Errno {
    let now = match id {
        CLOCKID_REALTIME => nanos(Some(crate::bindings::wasi::clocks::wall_clock::now())),
        CLOCKID_MONOTONIC | CLOCKID_PROCESS_CPUTIME_ID | CLOCKID_THREAD_CPUTIME_ID => {
            crate::bindings::wasi::clocks::monotonic_clock::now()
        }
        _ => return ERRNO_INVAL,
    };
    unsafe { *time = now };
    ERRNO_SUCCESS
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
    ERRNO_SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sched_yield() -> Errno {
    ERRNO_SUCCESS
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proc_exit(code: Exitcode) -> ! {
    // The response is completed first; then the instance ends as a command's does, which a
    // host tells apart from a trap. (Only success or failure: the status was logged.)
    State::get().finish(code);
    crate::bindings::wasi::cli::exit::exit(if code == 0 { Ok(()) } else { Err(()) });
    crate::trap()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn proc_raise(_sig: Signal) -> Errno {
    ERRNO_NOTSUP
}

// ---- reading and writing ---------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_write(
    fd_: u32,
    iovs: *const Ciovec,
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
                    stdout.write(unsafe { bytes(iov.buf, iov.buf_len) });
                    total += iov.buf_len;
                }
            }
            Fd::Stderr => {
                for iov in iovs {
                    crate::state::write_stderr(unsafe { bytes(iov.buf, iov.buf_len) });
                    total += iov.buf_len;
                }
            }
            Fd::File(file) if !file.directory => {
                for iov in iovs {
                    let data = unsafe { bytes(iov.buf, iov.buf_len) };
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
            Fd::File(_) => return Err(ERRNO_ISDIR),
            Fd::Stdin | Fd::Closed => return Err(ERRNO_BADF),
        }
        unsafe { *written = total };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_pwrite(
    fd_: u32,
    iovs: *const Ciovec,
    iovs_len: usize,
    offset: u64,
    written: *mut usize,
) -> Errno {
    let iovs = unsafe { iovecs(iovs, iovs_len) };
    run(|| {
        let file = file(fd_)?;
        let mut total = 0u64;
        for iov in iovs {
            let data = unsafe { bytes(iov.buf, iov.buf_len) };
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
        let Some(iov) = iovs.iter().find(|iov| iov.buf_len > 0) else {
            unsafe { *read = 0 };
            return Ok(());
        };
        let n = match fd(fd_)? {
            Fd::Stdin => {
                let state = State::get();
                // A program that waits for its input has said what it has so far.
                state.stdout.flush();
                match &state.stdin {
                    Some((stream, _)) => match stream
                        .blocking_read(iov.buf_len.min(MAX_READ) as u64)
                    {
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
                    .read(iov.buf_len.min(MAX_READ) as u64, file.position)
                    .map_err(errno)?;
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), iov.buf, data.len()) };
                file.position += data.len() as u64;
                data.len()
            }
            Fd::File(_) => return Err(ERRNO_ISDIR),
            _ => return Err(ERRNO_BADF),
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
        let Some(iov) = iovs.iter().find(|iov| iov.buf_len > 0) else {
            unsafe { *read = 0 };
            return Ok(());
        };
        let (data, _) = file
            .descriptor
            .read(iov.buf_len.min(MAX_READ) as u64, offset)
            .map_err(errno)?;
        unsafe {
            core::ptr::copy_nonoverlapping(data.as_ptr(), iov.buf, data.len());
            *read = data.len();
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_seek(fd_: u32, offset: i64, whence: Whence, new: *mut u64) -> Errno {
    run(|| {
        let Fd::File(file) = fd(fd_)? else {
            return Err(ERRNO_SPIPE);
        };
        let base = match whence {
            WHENCE_SET => 0,
            WHENCE_CUR => file.position as i64,
            WHENCE_END => file.descriptor.stat().map_err(errno)?.size as i64,
            _ => return Err(ERRNO_INVAL),
        };
        let position = base
            .checked_add(offset)
            .filter(|p| *p >= 0)
            .ok_or(ERRNO_INVAL)?;
        file.position = position as u64;
        unsafe { *new = file.position };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_tell(fd_: u32, position: *mut u64) -> Errno {
    unsafe { fd_seek(fd_, 0, WHENCE_CUR, position) }
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
            ERRNO_SUCCESS => Ok(()),
            e => Err(e),
        },
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_advise(fd_: u32, _offset: u64, _len: u64, _advice: Advice) -> Errno {
    run(|| file(fd_).map(drop))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_allocate(fd_: u32, _offset: u64, _len: u64) -> Errno {
    run(|| {
        file(fd_)?;
        Err(ERRNO_NOTSUP)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_fdstat_get(fd_: u32, stat: *mut Fdstat) -> Errno {
    run(|| {
        let (filetype, flags, rights) = match fd(fd_)? {
            // Not a terminal: the program buffers its output as it would into a pipe.
            Fd::Stdin => (FILETYPE_UNKNOWN, 0, RIGHTS_FD_READ),
            Fd::Stdout | Fd::Stderr => (FILETYPE_UNKNOWN, FDFLAGS_APPEND, RIGHTS_FD_WRITE),
            Fd::File(file) => {
                let ty = if file.directory {
                    FILETYPE_DIRECTORY
                } else {
                    filetype(file.descriptor.get_type().map_err(errno)?)
                };
                let flags = file.descriptor.get_flags().map_err(errno)?;
                let mut rights: Rights = !0;
                if !flags.contains(DescriptorFlags::READ) {
                    rights &= !(RIGHTS_FD_READ | RIGHTS_FD_READDIR);
                }
                if !flags.contains(DescriptorFlags::WRITE) {
                    rights &= !RIGHTS_FD_WRITE;
                }
                (ty, if file.append { FDFLAGS_APPEND } else { 0 }, rights)
            }
            Fd::Closed => return Err(ERRNO_BADF),
        };
        unsafe {
            stat.write(Fdstat {
                fs_filetype: filetype,
                fs_flags: flags,
                fs_rights_base: rights,
                fs_rights_inheriting: !0,
            })
        };
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_fdstat_set_flags(fd_: u32, flags: Fdflags) -> Errno {
    run(|| {
        // The streams are what they are; non-blocking is not offered.
        if let Fd::File(file) = fd(fd_)? {
            file.append = flags & FDFLAGS_APPEND != 0;
        }
        Ok(())
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_fdstat_set_rights(
    fd_: u32,
    _base: Rights,
    _inheriting: Rights,
) -> Errno {
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

fn timestamps(atim: u64, mtim: u64, flags: Fstflags) -> (NewTimestamp, NewTimestamp) {
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
    flags: Fstflags,
) -> Errno {
    run(|| {
        let (a, m) = timestamps(atim, mtim, flags);
        file(fd_)?.descriptor.set_times(a, m).map_err(errno)
    })
}

// ---- preopens and directories ----------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn fd_prestat_get(fd_: u32, prestat: *mut Prestat) -> Errno {
    run(|| match file(fd_)? {
        File {
            preopen: Some(path),
            ..
        } => {
            unsafe {
                prestat.write(Prestat {
                    tag: PREOPENTYPE_DIR.raw(),
                    u: PrestatU {
                        dir: PrestatDir {
                            pr_name_len: path.len(),
                        },
                    },
                })
            };
            Ok(())
        }
        _ => Err(ERRNO_BADF),
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
                return Err(ERRNO_NAMETOOLONG);
            }
            unsafe { core::ptr::copy_nonoverlapping(path.as_ptr(), buf, path.len()) };
            Ok(())
        }
        _ => Err(ERRNO_BADF),
    })
}

/// Directory entries from `cookie` on, each a `Dirent` and the name, the last one cut off
/// when the buffer ends, as preview-1 allows. Each call reads the directory from its start:
/// cookies are entry positions.
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
            // Set field by field in zeroed memory: a `Dirent` value's padding is undefined,
            // and the program gets to see it.
            let mut dirent = MaybeUninit::<Dirent>::zeroed();
            let header = unsafe {
                let d = dirent.as_mut_ptr();
                (*d).d_next = position;
                (*d).d_ino = ino;
                (*d).d_namlen = name.len() as u32;
                (*d).d_type = filetype(entry.type_);
                core::slice::from_raw_parts(d.cast::<u8>(), size_of::<Dirent>())
            };
            let mut record = Vec::with_capacity(header.len() + name.len());
            record.extend_from_slice(header);
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
    lookup: Lookupflags,
    path_ptr: *const u8,
    path_len: usize,
    oflags: Oflags,
    rights: Rights,
    _inheriting: Rights,
    fdflags: Fdflags,
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
    lookup: Lookupflags,
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
    lookup: Lookupflags,
    path_ptr: *const u8,
    path_len: usize,
    atim: u64,
    mtim: u64,
    flags: Fstflags,
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
    lookup: Lookupflags,
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

fn event(s: &Subscription, type_: Eventtype) -> Event {
    Event {
        userdata: s.userdata,
        error: ERRNO_SUCCESS,
        type_,
        fd_readwrite: EventFdReadwrite {
            nbytes: 0,
            flags: 0,
        },
    }
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
        return ERRNO_INVAL;
    }
    let subscriptions = unsafe { core::slice::from_raw_parts(subscriptions, count) };
    let events = unsafe { core::slice::from_raw_parts_mut(events, count) };
    State::get().stdout.flush();
    let mut n = 0;
    for s in subscriptions {
        let type_ = match s.u.tag {
            tag if tag == EVENTTYPE_CLOCK.raw() => continue,
            tag if tag == EVENTTYPE_FD_READ.raw() => EVENTTYPE_FD_READ,
            tag if tag == EVENTTYPE_FD_WRITE.raw() => EVENTTYPE_FD_WRITE,
            _ => return ERRNO_INVAL,
        };
        events[n] = event(s, type_);
        n += 1;
    }
    if n == 0 {
        // Every subscription is a clock: sleep until the first one is due.
        let now_wall = nanos(Some(crate::bindings::wasi::clocks::wall_clock::now()));
        let now = crate::bindings::wasi::clocks::monotonic_clock::now();
        let due = |s: &Subscription| {
            let clock = unsafe { s.u.u.clock };
            let absolute = clock.flags & SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME != 0;
            match (absolute, clock.id == CLOCKID_REALTIME) {
                (false, _) => clock.timeout,
                (true, true) => clock.timeout.saturating_sub(now_wall),
                (true, false) => clock.timeout.saturating_sub(now),
            }
        };
        let Some(first) = subscriptions.iter().min_by_key(|s| due(s)) else {
            return ERRNO_INVAL;
        };
        crate::bindings::wasi::clocks::monotonic_clock::subscribe_duration(due(first)).block();
        events[0] = event(first, EVENTTYPE_CLOCK);
        n = 1;
    }
    unsafe { *written = n };
    ERRNO_SUCCESS
}

// ---- sockets: none here -----------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_accept(_fd: u32, _flags: Fdflags, _new: *mut u32) -> Errno {
    ERRNO_NOTSUP
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_recv(
    _fd: u32,
    _iovs: *const Iovec,
    _iovs_len: usize,
    _flags: Riflags,
    _len: *mut usize,
    _out_flags: *mut Roflags,
) -> Errno {
    ERRNO_NOTSUP
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_send(
    _fd: u32,
    _iovs: *const Ciovec,
    _iovs_len: usize,
    _flags: Siflags,
    _len: *mut usize,
) -> Errno {
    ERRNO_NOTSUP
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sock_shutdown(_fd: u32, _how: Sdflags) -> Errno {
    ERRNO_NOTSUP
}
