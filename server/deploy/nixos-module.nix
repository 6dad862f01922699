# NixOS module for amarre (exported by flake.nix as nixosModules.default and
# nixosModules.amarre). It writes the daemon's TOML configuration and runs
# `amarre serve --config` as a Type=notify systemd service.
#
# The settings block between the BEGIN/END markers is checked by the test
# suite: every key it writes must be a key the daemon's configuration file
# accepts.
{ self }:
{ config, lib, pkgs, ... }:

let
  cfg = config.services.amarre;
  toml = pkgs.formats.toml { };

  loopback = cfg.host == "127.0.0.1" || cfg.host == "::1" || cfg.host == "localhost"
    || lib.hasPrefix "127." cfg.host;

  instanceModule = { name, ... }: {
    options = {
      agent = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "A built-in adapter: pi, claude-code, claude-code-raw or stdio.";
      };
      agentPath = lib.mkOption {
        type = lib.types.nullOr lib.types.path;
        default = null;
        description = "An adapter component file (.wasm), loaded instead of `agent`.";
      };
      env = lib.mkOption {
        type = lib.types.attrsOf lib.types.str;
        default = { };
        description = "Environment for this instance's agents (and visible to its adapter).";
      };
      command = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        description = "Replaces the adapter's program.";
      };
      args = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        default = [ ];
        description = "Appended to the adapter's arguments.";
      };
    };
  };

  instances =
    if cfg.instances != { } then cfg.instances
    else { default = { agent = cfg.agent; agentPath = null; env = { }; command = null; args = [ ]; }; };

  # BEGIN amarre config keys
  settings = {
    server = {
      host = cfg.host;
      port = cfg.port;
      max_sessions = cfg.maxSessions;
      allow_non_loopback = cfg.allowNonLoopback || !loopback;
      allowed_hosts = cfg.allowedHosts;
      allowed_origins = cfg.allowedOrigins;
    };
    push = lib.optionalAttrs cfg.push.enable {
      tokens_path = cfg.push.tokensPath;
      grace_ms = cfg.push.graceMs;
    };
    log = {
      format = cfg.logFormat;
    };
    instances = lib.mapAttrsToList
      (id: i: lib.filterAttrs (_: v: v != null) {
        inherit id;
        agent = i.agent;
        agent_path = if i.agentPath == null then null else toString i.agentPath;
        env = i.env;
        command = i.command;
        args = i.args;
      })
      instances;
  };
  # END amarre config keys

  configFile = toml.generate "amarre.toml" settings;
in
{
  options.services.amarre = {
    enable = lib.mkEnableOption "amarre, a daemon to drive CLI coding agents from your phone";

    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "amarre.packages.\${system}.default";
      description = "The amarre package.";
    };

    agent = lib.mkOption {
      type = lib.types.str;
      default = "pi";
      description = "The adapter of the single instance `default`, when `instances` is empty.";
    };

    instances = lib.mkOption {
      type = lib.types.attrsOf (lib.types.submodule instanceModule);
      default = { };
      example = lib.literalExpression ''{ default.agent = "pi"; claude = { agent = "claude-code"; env.AMARRE_CLAUDE_MODEL = "claude-sonnet-4"; }; }'';
      description = "Instances by id. Empty: one instance `default` with `agent`.";
    };

    host = lib.mkOption {
      type = lib.types.str;
      default = "127.0.0.1";
      description = ''
        Bind address. Keep it on loopback and reach it through `tailscale serve`:
        amarre has no authentication. A non-loopback address is allowed
        explicitly (the module sets allow_non_loopback) and logged as a warning.
      '';
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 8341;
      description = "Port to listen on.";
    };

    user = lib.mkOption {
      type = lib.types.str;
      default = "amarre";
      description = ''
        The user the daemon and its agents run as; agents use this user's home
        (~/.pi, ~/.claude, logins). The default creates a system user `amarre`.
      '';
    };

    maxSessions = lib.mkOption {
      type = lib.types.ints.positive;
      default = 8;
      description = "Cap on live sessions.";
    };

    push = {
      enable = lib.mkEnableOption "Expo push notifications when a session waits for an answer or crashes";
      tokensPath = lib.mkOption {
        type = lib.types.str;
        default = "/var/lib/amarre/push-tokens.json";
        description = "The push token store.";
      };
      graceMs = lib.mkOption {
        type = lib.types.ints.unsigned;
        default = 15000;
        description = "How long a question waits before a push.";
      };
    };

    allowNonLoopback = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Allow a non-loopback bind (set automatically when `host` is not loopback).";
    };

    allowedHosts = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Extra Host header values to accept.";
    };

    allowedOrigins = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Extra browser origins to accept (CORS is sent for these only).";
    };

    logFormat = lib.mkOption {
      type = lib.types.enum [ "text" "json" ];
      default = "text";
      description = "Log line format on the journal.";
    };

    path = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
      example = lib.literalExpression "[ pkgs.nodejs pkgs.git ]";
      description = "Packages on the agents' PATH (the agents themselves, git, ...).";
    };

    environment = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      description = "Extra environment for the daemon (PI_BIN, CLAUDE_BIN, AMARRE_* ...).";
    };
  };

  config = lib.mkIf cfg.enable {
    users.users = lib.mkIf (cfg.user == "amarre") {
      amarre = {
        isSystemUser = true;
        group = "amarre";
        home = "/var/lib/amarre";
        createHome = true;
      };
    };
    users.groups = lib.mkIf (cfg.user == "amarre") { amarre = { }; };

    systemd.services.amarre = {
      description = "amarre: drive CLI coding agents from your phone";
      wantedBy = [ "multi-user.target" ];
      after = [ "network.target" ];
      path = cfg.path;
      # Durable sessions (docs/durability.md) in systemd's StateDirectory.
      environment = { AMARRE_STATE_DIR = "/var/lib/amarre"; } // cfg.environment;
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        User = cfg.user;
        ExecStart = "${cfg.package}/bin/amarre serve --config ${configFile}";
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        Restart = "on-failure";
        RestartSec = "2s";
        WatchdogSec = "30s";
        KillMode = "mixed";
        KillSignal = "SIGTERM";
        TimeoutStopSec = "20s";
        RuntimeDirectory = "amarre";
        RuntimeDirectoryMode = "0700";
        CacheDirectory = "amarre";
        CacheDirectoryMode = "0700";
        StateDirectory = "amarre";
        StateDirectoryMode = "0700";
        NoNewPrivileges = true;
        ProtectSystem = "full";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictSUIDSGID = true;
        RestrictRealtime = true;
        LockPersonality = true;
        CapabilityBoundingSet = "";
        SystemCallArchitectures = "native";
        UMask = "0077";
      };
    };
  };
}
