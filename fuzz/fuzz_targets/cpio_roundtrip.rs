//! The initramfs writer, read back by a newc reader written here from the format's
//! description (as the kernel's unpacker reads it): what was written is what is read, or
//! the writer refused the entry.
#![no_main]
use arbitrary::Arbitrary;
use cairn_formats::cpio::CpioWriter;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Entry {
    Dir {
        path: String,
        mode: u16,
        mtime: u32,
    },
    File {
        path: String,
        mode: u16,
        mtime: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
        mtime: u32,
    },
    CharDevice {
        path: String,
        mode: u16,
        major: u8,
        minor: u8,
        mtime: u32,
    },
}

#[derive(Debug, PartialEq)]
struct Read {
    mode: u32,
    mtime: u32,
    rdev: (u32, u32),
    name: String,
    data: Vec<u8>,
}

fn hex(b: &[u8], at: usize) -> u32 {
    u32::from_str_radix(std::str::from_utf8(&b[at..at + 8]).unwrap(), 16).unwrap()
}

fn read_newc(mut b: &[u8]) -> Vec<Read> {
    let mut out = Vec::new();
    loop {
        assert!(b.len() >= 110 && &b[..6] == b"070701", "a newc header");
        let (mode, mtime, size) = (hex(b, 14), hex(b, 46), hex(b, 54) as usize);
        let rdev = (hex(b, 78), hex(b, 86));
        let namesize = hex(b, 94) as usize;
        let name_end = 110 + namesize;
        assert_eq!(b[name_end - 1], 0, "the name ends in NUL");
        let name = std::str::from_utf8(&b[110..name_end - 1])
            .unwrap()
            .to_string();
        assert!(!name.contains('\0'), "a NUL inside a name: {name:?}");
        let data_at = name_end.next_multiple_of(4);
        if name == "TRAILER!!!" {
            assert!(b[data_at..].is_empty(), "nothing after the trailer");
            return out;
        }
        let data = b[data_at..data_at + size].to_vec();
        b = &b[(data_at + size).next_multiple_of(4)..];
        out.push(Read {
            mode,
            mtime,
            rdev,
            name,
            data,
        });
    }
}

fuzz_target!(|entries: Vec<Entry>| {
    let mut w = CpioWriter::new(Vec::new());
    let mut expected = Vec::new();
    for e in entries {
        let (result, read) = match e {
            Entry::Dir { path, mode, mtime } => (
                w.dir(&path, mode.into(), mtime),
                Read {
                    mode: 0o040000 | (u32::from(mode) & 0o7777),
                    mtime,
                    rdev: (0, 0),
                    name: path,
                    data: vec![],
                },
            ),
            Entry::File {
                path,
                mode,
                mtime,
                data,
            } => (
                w.file(&path, mode.into(), mtime, &data),
                Read {
                    mode: 0o100000 | (u32::from(mode) & 0o7777),
                    mtime,
                    rdev: (0, 0),
                    name: path,
                    data,
                },
            ),
            Entry::Symlink {
                path,
                target,
                mtime,
            } => (
                w.symlink(&path, &target, mtime),
                Read {
                    mode: 0o120777,
                    mtime,
                    rdev: (0, 0),
                    name: path,
                    data: target.into_bytes(),
                },
            ),
            Entry::CharDevice {
                path,
                mode,
                major,
                minor,
                mtime,
            } => (
                w.char_device(&path, mode.into(), major.into(), minor.into(), mtime),
                Read {
                    mode: 0o020000 | (u32::from(mode) & 0o7777),
                    mtime,
                    rdev: (major.into(), minor.into()),
                    name: path,
                    data: vec![],
                },
            ),
        };
        if result.is_ok() {
            expected.push(read);
        }
    }
    let bytes = w.finish().unwrap();
    assert_eq!(bytes.len() % 4, 0);
    assert_eq!(read_newc(&bytes), expected);
});
