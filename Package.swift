// swift-tools-version:5.10
import PackageDescription

let package = Package(
    name: "maqet",
    products: [
        .executable(name: "maqet", targets: ["maqet"]),
    ],
    dependencies: [
        // Subcommands, global options, --help and validation: the standard for Swift CLIs.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // YAML for VM definitions (maqet.yaml): libyaml wrapped, anchors and aliases resolved.
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // Debian's libsqlite3 (libsqlite3-dev), linked, never vendored.
        .systemLibrary(name: "CSQLite", path: "Sources/CSQLite", providers: [.apt(["libsqlite3-dev"])]),
        // Debian's liblua5.4 (liblua5.4-dev) plus the C glue Swift cannot express: macros, the error
        // trampoline and the stop hook.
        .target(name: "CLuaShim", path: "Sources/CLuaShim", linkerSettings: [.linkedLibrary("lua5.4")]),
        // Mechanism: typed wrappers over SQLite, Lua, processes and QMP; no VM policy, no vm_instances SQL.
        .target(name: "MaqetCore", dependencies: ["CSQLite", "CLuaShim"]),
        // The Lua runtime: builds the state, one file per Lua module, the migrator.
        .target(
            name: "MaqetRuntime",
            dependencies: ["MaqetCore", "CLuaShim", "CSQLite", .product(name: "Yams", package: "Yams")],
            plugins: ["EmbedLua"]
        ),
        // The per-VM runner (`maqet __runner`): a process with its own life. Mechanism only (spawn,
        // poll, signals, QMP); what events and exits mean is scripts/lifecycle/runner.lua, run in
        // the same Lua runtime as the CLI.
        .target(name: "MaqetRunner", dependencies: ["MaqetRuntime", "MaqetCore", "CLuaShim"]),
        // The thin CLI.
        .executableTarget(
            name: "maqet",
            dependencies: [
                "MaqetRunner", "MaqetRuntime", "MaqetCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                // --format yaml (Commands/Output.swift).
                .product(name: "Yams", package: "Yams"),
            ]
        ),
        // Build-time tool: turns migrations/*.lua and scripts/**/*.lua into Swift source so a lone
        // binary carries them.
        .executableTarget(name: "maqet-embed", path: "Tools/maqet-embed"),
        .plugin(name: "EmbedLua", capability: .buildTool(), dependencies: ["maqet-embed"]),
        .testTarget(
            name: "MaqetTests",
            dependencies: ["maqet", "MaqetRuntime", "MaqetCore", "CSQLite"],
            exclude: ["Fixtures"]
        ),
    ]
)
