{
  description = "amarre: drive CLI coding agents from your phone over your private network";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # A Rust toolchain with the wasm32-wasip2 target, to build the adapter
    # components the daemon embeds.
    rust-overlay.url = "github:oxalica/rust-overlay";
    rust-overlay.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, rust-overlay }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system:
        f (import nixpkgs { inherit system; overlays = [ rust-overlay.overlays.default ]; }));
      toolchain = pkgs: pkgs.rust-bin.stable.latest.default.override {
        targets = [ "wasm32-wasip2" ];
        extensions = [ "rust-src" "clippy" "rustfmt" ];
      };
      amarreFor = pkgs:
        let
          rustPlatform = pkgs.makeRustPlatform {
            cargo = toolchain pkgs;
            rustc = toolchain pkgs;
          };
        in
        rustPlatform.buildRustPackage {
          pname = "amarre";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
          src = ./.;
          cargoLock.lockFile = ./Cargo.lock;
          # The daemon only; server/build.rs builds the adapter components
          # (from the same vendored sources) and embeds them.
          cargoBuildFlags = [ "-p" "amarre" ];
          # The test suite needs the agent CLIs from npm: it runs in CI with
          # scripts/test, not in the sandbox.
          doCheck = false;
          meta = {
            description = "Drive CLI coding agents from your phone over your private network";
            mainProgram = "amarre";
            license = with pkgs.lib.licenses; [ mit asl20 ];
            platforms = systems;
          };
        };
    in
    {
      packages = forAll (pkgs: rec {
        amarre = amarreFor pkgs;
        default = amarre;
      });

      overlays.default = final: prev: {
        amarre = self.packages.${prev.stdenv.hostPlatform.system}.default;
      };

      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [ (toolchain pkgs) pkgs.nodejs_20 pkgs.cargo-nextest pkgs.tmux ];
        };
      });

      nixosModules.amarre = import ./server/deploy/nixos-module.nix { inherit self; };
      nixosModules.default = self.nixosModules.amarre;

      checks = forAll (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        # The module evaluates and produces a notify unit that runs amarre.
        module = let
          system = nixpkgs.lib.nixosSystem {
            system = pkgs.stdenv.hostPlatform.system;
            modules = [
              self.nixosModules.default
              {
                boot.isContainer = true;
                system.stateVersion = "24.11";
                services.amarre = {
                  enable = true;
                  instances.default.agent = "pi";
                  instances.claude = { agent = "claude-code"; env.AMARRE_CLAUDE_MODEL = "claude-sonnet-4"; };
                  push.enable = true;
                };
              }
            ];
          };
          unit = system.config.systemd.services.amarre.serviceConfig;
        in
        assert unit.Type == "notify";
        assert nixpkgs.lib.hasInfix "amarre serve --config" unit.ExecStart;
        pkgs.runCommand "amarre-module-eval" { } "touch $out";
      });
    };
}
