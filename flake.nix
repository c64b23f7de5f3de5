{
  description = "Cairn: reproducible OS and container images for bare-metal Kubernetes";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in {
      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo rustc rustfmt clippy
            skopeo umoci libfaketime gzip gnutar pigz
            debian-archive-keyring
            qemu squashfsTools dosfstools util-linux cpio mtools e2fsprogs
            shellcheck systemd bmaptool docker-distribution apacheHttpd openssl
          ];
          # The tests read Debian's archive keyring at its Debian path unless told otherwise.
          shellHook = ''
            export CAIRN_DEBIAN_KEYRING=${pkgs.debian-archive-keyring}/share/keyrings/debian-archive-keyring.gpg
          '';
        };
      });
    };
}
