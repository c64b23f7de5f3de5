//! What Debian's maintainer scripts would have done, done declaratively on an unpacked root
//! filesystem: users and groups (base-passwd, sysusers.d, the spec), dpkg's status file,
//! `update-alternatives` in automatic mode, and `systemctl enable` from [Install] sections.
//! No script ever runs, so every arch builds on any host.

use crate::rootfs::{Kind, Rootfs};
use cairn_steps::Error;
use std::collections::BTreeMap;

/// Users and groups, in file order.
#[derive(Default)]
pub(crate) struct Accounts {
    passwd: Vec<[String; 7]>,
    group: Vec<(String, u32, Vec<String>)>,
    shadow_locked: BTreeMap<String, &'static str>,
}

impl Accounts {
    pub(crate) fn uid_used(&self, id: u32) -> bool {
        self.passwd.iter().any(|p| p[2] == id.to_string())
    }
    pub(crate) fn gid_used(&self, id: u32) -> bool {
        self.group.iter().any(|g| g.1 == id)
    }
    pub(crate) fn gid_of(&self, name: &str) -> Option<u32> {
        self.group.iter().find(|g| g.0 == name).map(|g| g.1)
    }
    /// systemd-sysusers' choice: the highest free system id, from 999 down.
    pub(crate) fn allocate(&self, both: bool) -> Result<u32, Error> {
        (100..=999)
            .rev()
            .find(|id| !self.gid_used(*id) && (!both || !self.uid_used(*id)))
            .ok_or_else(|| Error::msg("no free system id left between 100 and 999"))
    }

    pub(crate) fn add_group(&mut self, name: &str, gid: Option<u32>) -> Result<u32, Error> {
        if let Some(g) = self.gid_of(name) {
            return Ok(g);
        }
        let gid = match gid {
            Some(g) if !self.gid_used(g) => g,
            _ => self.allocate(false)?,
        };
        self.group.push((name.to_string(), gid, Vec::new()));
        Ok(gid)
    }

    pub(crate) fn add_user(
        &mut self,
        name: &str,
        id: Option<u32>,
        gecos: &str,
        home: &str,
        shell: &str,
    ) -> Result<(), Error> {
        if self.passwd.iter().any(|p| p[0] == name) {
            return Ok(());
        }
        let uid = match id {
            Some(u) if !self.uid_used(u) => u,
            _ => match self.gid_of(name) {
                Some(g) if !self.uid_used(g) => g,
                _ => self.allocate(true)?,
            },
        };
        let gid = self.add_group(name, Some(uid))?;
        self.passwd.push([
            name.into(),
            "x".into(),
            uid.to_string(),
            gid.to_string(),
            gecos.into(),
            home.into(),
            shell.into(),
        ]);
        self.shadow_locked.insert(name.to_string(), "!*");
        Ok(())
    }

    pub(crate) fn parse_master(&mut self, passwd: &str, group: &str) {
        for line in passwd.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() == 7 {
                self.passwd.push(std::array::from_fn(|i| {
                    if i == 1 {
                        "x".to_string()
                    } else {
                        f[i].to_string()
                    }
                }));
                self.shadow_locked.insert(f[0].to_string(), "*");
            }
        }
        for line in group.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(':').collect();
            if let (4, Ok(gid)) = (f.len(), f.get(2).map_or(Ok(0), |g| g.parse::<u32>())) {
                let members = f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect();
                self.group.push((f[0].to_string(), gid, members));
            }
        }
    }

    /// Applies a sysusers.d file (`u`, `g` and `m` lines; ranges are ignored).
    pub(crate) fn sysusers(&mut self, text: &str, file: &str) -> Result<(), Error> {
        for line in text.lines() {
            let words = split_quoted(line);
            let Some(kind) = words.first() else { continue };
            if kind.starts_with('#') {
                continue;
            }
            let arg = |i: usize| words.get(i).map(String::as_str).filter(|w| *w != "-");
            let name =
                arg(1).ok_or_else(|| Error::msg(format!("{file}: line {line:?} has no name")))?;
            let id = arg(2)
                .and_then(|i| i.split(':').next())
                .and_then(|i| i.parse::<u32>().ok());
            match kind.trim_end_matches('!') {
                "u" => self.add_user(
                    name,
                    id,
                    arg(3).unwrap_or(""),
                    arg(4).unwrap_or("/"),
                    arg(5).unwrap_or("/usr/sbin/nologin"),
                )?,
                "g" => {
                    self.add_group(name, id)?;
                }
                "m" => {
                    let group = arg(2)
                        .ok_or_else(|| Error::msg(format!("{file}: line {line:?} has no group")))?
                        .to_string();
                    self.add_group(&group, None)?;
                    if let Some(g) = self.group.iter_mut().find(|g| g.0 == group) {
                        if !g.2.iter().any(|m| m == name) {
                            g.2.push(name.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub(crate) fn files(
        &self,
        epoch: u64,
        shadow_gid: u64,
    ) -> Vec<(&'static str, String, u32, u64)> {
        let days = epoch / 86_400;
        let passwd: String = self
            .passwd
            .iter()
            .map(|p| format!("{}\n", p.join(":")))
            .collect();
        let group: String = self
            .group
            .iter()
            .map(|g| format!("{}:x:{}:{}\n", g.0, g.1, g.2.join(",")))
            .collect();
        let shadow: String = self
            .passwd
            .iter()
            .map(|p| {
                format!(
                    "{}:{}:{days}:0:99999:7:::\n",
                    p[0],
                    self.shadow_locked.get(&p[0]).copied().unwrap_or("*")
                )
            })
            .collect();
        let gshadow: String = self
            .group
            .iter()
            .map(|g| format!("{}:*::{}\n", g.0, g.2.join(",")))
            .collect();
        vec![
            ("/etc/passwd", passwd, 0o644, 0),
            ("/etc/group", group, 0o644, 0),
            ("/etc/shadow", shadow, 0o640, shadow_gid),
            ("/etc/gshadow", gshadow, 0o640, shadow_gid),
        ]
    }
}

fn split_quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `/var/lib/dpkg/status` for the unpacked packages (sorted by name).
pub fn dpkg_status(controls: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for control in controls.values() {
        let mut lines = control.trim_end().lines();
        if let Some(first) = lines.next() {
            out.push_str(first);
            out.push_str("\nStatus: install ok installed\n");
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            out.push('\n');
        }
    }
    out
}

/// One `update-alternatives --install` from a maintainer script: the master
/// (link, name, path), its priority, and its slaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    pub link: String,
    pub name: String,
    pub path: String,
    pub priority: i64,
    pub slaves: Vec<(String, String, String)>,
}

/// The `update-alternatives --install` calls of a postinst whose arguments are literal
/// (no shell variables), continued lines joined.
pub fn parse_alternatives(script: &str) -> Vec<Alternative> {
    let joined = script.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined.lines() {
        let Some(at) = line.find("update-alternatives") else {
            continue;
        };
        let words: Vec<&str> = line[at..]
            .split(|c: char| c.is_whitespace() || c == ';')
            .filter(|w| !w.is_empty())
            .collect();
        let Some(i) = words.iter().position(|w| *w == "--install") else {
            continue;
        };
        let args = &words[i + 1..];
        if args.len() < 4 || args[..4].iter().any(|a| a.contains('$')) {
            continue;
        }
        let Ok(priority) = args[3].parse() else {
            continue;
        };
        let mut alt = Alternative {
            link: args[0].into(),
            name: args[1].into(),
            path: args[2].into(),
            priority,
            slaves: Vec::new(),
        };
        let mut rest = &args[4..];
        while rest.len() >= 4 && rest[0] == "--slave" {
            if !rest[1..4].iter().any(|a| a.contains('$')) {
                alt.slaves
                    .push((rest[1].into(), rest[2].into(), rest[3].into()));
            }
            rest = &rest[4..];
        }
        out.push(alt);
    }
    out
}

/// What `update-alternatives` would leave in automatic mode: for each name, the
/// alternative with the highest priority whose target is in the image, as symlinks
/// `link -> /etc/alternatives/name -> path` (slaves likewise).
pub(crate) fn apply_alternatives(
    fs: &mut Rootfs,
    alternatives: &[Alternative],
) -> Result<(), Error> {
    let mut best: BTreeMap<&str, &Alternative> = BTreeMap::new();
    let present = |fs: &Rootfs, path: &str| {
        let p = path.trim_start_matches('/');
        fs.nodes().contains_key(p) || fs.nodes().contains_key(&format!("usr/{p}"))
    };
    for a in alternatives {
        if !present(fs, &a.path) {
            continue;
        }
        match best.get(a.name.as_str()) {
            Some(b) if b.priority >= a.priority => {}
            _ => {
                best.insert(&a.name, a);
            }
        }
    }
    for a in best.values() {
        let mut links = vec![(a.link.as_str(), a.name.as_str(), a.path.as_str())];
        links.extend(
            a.slaves
                .iter()
                .filter(|(_, _, path)| present(fs, path))
                .map(|(l, n, p)| (l.as_str(), n.as_str(), p.as_str())),
        );
        for (link, name, path) in links {
            let state = format!("/etc/alternatives/{name}");
            fs.add_symlink(&state, path)?;
            if !present(fs, link) {
                fs.add_symlink(link, &state)?;
            }
        }
    }
    Ok(())
}

/// `systemctl enable` for `unit`: symlinks from its [Install] section.
pub(crate) fn enable_unit(fs: &mut Rootfs, unit: &str) -> Result<(), Error> {
    let (template, instance) = match unit.split_once('@') {
        Some((base, rest)) if !rest.starts_with('.') => (
            format!("{base}@.{}", rest.rsplit('.').next().unwrap_or("service")),
            Some(unit),
        ),
        _ => (unit.to_string(), None),
    };
    let file = ["usr/lib/systemd/system", "etc/systemd/system"]
        .iter()
        .map(|d| format!("{d}/{template}"))
        .find(|p| fs.nodes().contains_key(p));
    let Some(file) = file else {
        return Err(Error::msg(format!(
            "service {unit}: no unit file {template} in the image: add the package that ships it"
        )));
    };
    let text = match fs.read_file(&file)? {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => {
            // A symlink (an alias): follow it once.
            let Some(Kind::Symlink(target)) = fs.nodes().get(&file).map(|n| n.kind.clone()) else {
                return Err(Error::msg(format!(
                    "service {unit}: {file} is not a unit file"
                )));
            };
            let target = format!(
                "usr/lib/systemd/system/{}",
                target.rsplit('/').next().unwrap_or(&target)
            );
            String::from_utf8_lossy(&fs.read_file(&target)?.unwrap_or_default()).into_owned()
        }
    };
    let mut in_install = false;
    let mut links = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_install = line == "[Install]";
            continue;
        }
        if !in_install {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            for v in value.split_whitespace() {
                match key.trim() {
                    "WantedBy" => links.push(format!(
                        "etc/systemd/system/{v}.wants/{}",
                        instance.unwrap_or(unit)
                    )),
                    "RequiredBy" => links.push(format!(
                        "etc/systemd/system/{v}.requires/{}",
                        instance.unwrap_or(unit)
                    )),
                    "Alias" => links.push(format!("etc/systemd/system/{v}")),
                    _ => {}
                }
            }
        }
    }
    if links.is_empty() {
        return Err(Error::msg(format!(
            "service {unit}: {file} has no [Install] section; it cannot be enabled"
        )));
    }
    let target = format!("/{file}");
    for link in links {
        fs.add_symlink(&link, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_parse_from_debian_postinsts() {
        let iptables = "if [ \"$1\" = configure ]; then\n\tupdate-alternatives \\\n\t  --install /usr/sbin/iptables iptables /usr/sbin/iptables-legacy 10 \\\n\t  --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-legacy-save\n        update-alternatives \\\n          --install /usr/sbin/iptables iptables /usr/sbin/iptables-nft 20 \\\n          --slave /usr/sbin/iptables-save iptables-save /usr/sbin/iptables-nft-save\n  update-alternatives --install /usr/bin/x x \"$DIR/x\" 5\nfi\n";
        let alts = parse_alternatives(iptables);
        assert_eq!(alts.len(), 2, "{alts:?}");
        assert_eq!(
            alts[1],
            Alternative {
                link: "/usr/sbin/iptables".into(),
                name: "iptables".into(),
                path: "/usr/sbin/iptables-nft".into(),
                priority: 20,
                slaves: vec![(
                    "/usr/sbin/iptables-save".into(),
                    "iptables-save".into(),
                    "/usr/sbin/iptables-nft-save".into()
                )],
            }
        );
        assert_eq!(alts[0].priority, 10);
    }
}
