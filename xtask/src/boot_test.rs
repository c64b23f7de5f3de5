use crate::Env;
use cairn_qemu::{BootConfig, Machine, boot_test};
use cairn_steps::Error;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Nodes to boot (built first if needed): nodes/NAME.toml
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Boot every node in nodes/
    #[arg(long)]
    pub all: bool,
    /// Give up on one boot after this many seconds (QEMU runs under software emulation)
    #[arg(long, default_value_t = 480)]
    pub timeout: u64,
    /// Boots to try per node before failing
    #[arg(long, default_value_t = 2)]
    pub attempts: u32,
    /// Print the guest's console as it boots
    #[arg(long)]
    pub console: bool,
    /// SD nodes: boot twice from the same card and check the data partition survives
    #[arg(long)]
    pub reboot: bool,
    /// A secrets file (KEY=value lines) to flash onto each SD node's card or serve to each
    /// PXE node: the node must then report secrets=present, and no secret value may appear
    /// on its console or in its journal. Without it, the node must report secrets=absent
    #[arg(long)]
    pub secrets: Option<std::path::PathBuf>,
    /// SD nodes: boot this card file (written by `cargo xtask flash NODE --file FILE`, or
    /// left by an earlier boot test) as it is, data partition included, instead of a fresh
    /// card; it is grown (sparse) to the test card's size. --secrets then says what the
    /// card holds
    #[arg(long, value_name = "FILE")]
    pub card: Option<std::path::PathBuf>,
    /// SD nodes: boot once writing to the data partition and kill QEMU at a random moment
    /// (a power cut), then boot again: the data partition must be checked and kept, with
    /// the last synced write whole
    #[arg(long)]
    pub power_cut: bool,
    /// SD nodes: the QEMU machine. `virt`: the generic one, the card as a virtio disk.
    /// `board`: the node's own board (raspi2b, raspi3b, raspi4b) with the card on its SD
    /// controller and the kernel, initramfs and device tree read from the card
    #[arg(long, value_enum, default_value = "virt")]
    pub machine: MachineArg,
    /// Print each node's report (hostname, addresses, role, seconds, log) as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum MachineArg {
    Virt,
    Board,
}

pub fn run(env: &Env, args: Args) -> Result<ExitCode, Error> {
    let project = crate::load_project(env)?;
    let lock = crate::read_lock(env)?;
    let names: Vec<String> = if args.all {
        project.nodes.iter().map(|n| n.name.clone()).collect()
    } else {
        args.names.clone()
    };
    let secrets = match &args.secrets {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| Error::at(format!("secrets file {}", path.display()), e))?;
            for name in &names {
                let needs = project
                    .node(name)
                    .map(|n| cairn_node::secrets::Needs::of(&project.cluster, n))
                    .unwrap_or_default();
                cairn_node::secrets::check(path, &bytes, cairn_node::disk::SECRETS_BYTES, needs)
                    .map_err(|e| e.context(format!("the secrets of node {name}")))?;
            }
            Some(bytes)
        }
        None => None,
    };
    let config = BootConfig {
        secrets,
        timeout: Duration::from_secs(args.timeout),
        attempts: args.attempts,
        log_dir: env.ctx.store.join("logs/boot"),
        echo: args.console,
        reboot: args.reboot,
        card: args.card.clone(),
        power_cut: args.power_cut,
        machine: match args.machine {
            MachineArg::Virt => Machine::Virt,
            MachineArg::Board => Machine::Board,
        },
    };
    let mut out = Vec::new();
    for name in &names {
        let result = cairn_node::build::build_node(&env.ctx, &project, &lock, name)
            .map_err(|e| e.context(format!("building node {name}")))?;
        let node = project.node(name).expect("built, so it exists");
        if !args.json {
            eprintln!("booting {name} ({}) under QEMU...", node.arch.as_str());
        }
        let report = boot_test(&env.ctx.store, node, &result, &config)
            .map_err(|e| e.context(format!("boot test of {name}")))?;
        if !args.json {
            eprintln!(
                "{name}: booted on {} in {:.0} s: hostname {}, address {}, role {}, secrets {}, writable {}{}{}",
                report.machine,
                report.seconds,
                report.hostname,
                report.addresses.join(","),
                report.role,
                report.secrets,
                report.writable,
                report
                    .rebooted_writable
                    .as_ref()
                    .map(|w| format!(", after a reboot {w}"))
                    .unwrap_or_default(),
                report
                    .power_cut
                    .as_ref()
                    .map(|c| format!(
                        "; cut {:.1} s into writing (last synced {}), then {}, data {}",
                        c.after_first_sync,
                        c.last_synced.as_deref().unwrap_or("nothing"),
                        report.data_check.as_deref().unwrap_or("not checked"),
                        report.kept.as_deref().unwrap_or("gone")
                    ))
                    .unwrap_or_default()
            );
        }
        let mut j = report.to_json();
        j["node"] = name.clone().into();
        out.push(j);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "boots": out })).expect("json")
        );
    }
    Ok(ExitCode::SUCCESS)
}
