use crate::Env;
use cairn_steps::Error;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Write PREFIX.key (the private key, mode 0600) and PREFIX.pub
    #[arg(long, default_value = "cairn", value_name = "PREFIX")]
    pub output: PathBuf,
    /// Write the private key in cosign's encrypted format, under the password in
    /// COSIGN_PASSWORD (else unencrypted PKCS#8 PEM, as openssl writes)
    #[arg(long)]
    pub encrypt: bool,
    /// Print the key's id and both paths as JSON
    #[arg(long)]
    pub json: bool,
}

/// Creates `path` only if it does not exist yet, with `mode`.
fn create_new(path: &PathBuf, mode: u32, bytes: &[u8]) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::msg(format!(
                    "{} exists: refusing to replace a key (move it away, or choose another --output)",
                    path.display()
                ))
            } else {
                Error::at(path.display(), e)
            }
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::at(path.display(), e))
}

pub fn run(_env: &Env, args: Args) -> Result<ExitCode, Error> {
    let with_ext = |ext: &str| {
        let mut p = args.output.clone().into_os_string();
        p.push(ext);
        PathBuf::from(p)
    };
    let (key_path, pub_path) = (with_ext(".key"), with_ext(".pub"));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Error::msg(format!(
                "{} exists: refusing to replace a key (move it away, or choose another --output)",
                p.display()
            )));
        }
    }
    let key = cairn_trust::SigningKey::generate().map_err(|e| Error::msg(e.0))?;
    let private = if args.encrypt {
        let password = std::env::var_os(cairn_trust::keys::PASSWORD_ENV).ok_or_else(|| {
            Error::msg(format!(
                "--encrypt takes the password from {}: set it",
                cairn_trust::keys::PASSWORD_ENV
            ))
        })?;
        key.to_cosign_pem(password.as_encoded_bytes())
    } else {
        key.to_pkcs8_pem()
    }
    .map_err(|e| Error::msg(e.0))?;
    create_new(&key_path, 0o600, private.as_bytes())?;
    create_new(&pub_path, 0o644, key.public().to_pem().as_bytes())?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "id": key.public().id(),
                "private_key": key_path.display().to_string(),
                "public_key": pub_path.display().to_string(),
                "encrypted": args.encrypt,
            })
        );
    } else {
        println!("{}", key.public().id());
    }
    eprintln!(
        "wrote {} (keep it secret: a CI secret, never the repository) and {} (give it to whoever verifies)",
        key_path.display(),
        pub_path.display()
    );
    Ok(ExitCode::SUCCESS)
}
