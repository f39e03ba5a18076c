import Foundation
import XCTest

/// The published maqet's global flags and settings file, and the output formats scripts read:
/// -V, --debug, --log-file, --maqet-config-dir, --maqet-runtime-dir, maqet.conf, --format yaml,
/// and the flags of apply, start and rm its users type. Real binary, real SQLite, real Lua; the
/// one VM that runs is a guestless QEMU (-machine none).
final class GlobalFlagsTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    func object(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        guard let value = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            XCTFail("not a JSON object: \(text)", file: file, line: line)
            return [:]
        }
        return value
    }

    func testVersionFlagBeforeOrAfterTheSubcommand() {
        let sandbox = makeSandbox()
        let version = sandbox.maqet(["--version"])
        version.assertExit(0)
        XCTAssertFalse(version.stdout.isEmpty)
        for arguments in [["-V"], ["ls", "-V"], ["status", "x", "-V"]] {
            let result = sandbox.maqet(arguments)
            result.assertExit(0)
            XCTAssertEqual(result.stdout, version.stdout, "\(arguments)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.databasePath), "-V opens no database")
        // A script's own arguments are the script's.
        let script = sandbox.runScript("print(...)\n", args: ["-V"])
        script.assertExit(0)
        XCTAssertEqual(script.stdout, "-V\n")
    }

    /// The published maqet's flags that mean nothing here: one line saying what to type instead,
    /// exit 64, and nothing done.
    func testFlagsThatMeanNothingHereSayWhatToType() {
        let sandbox = makeSandbox()
        for (arguments, instead) in [(["--migrate-force"], "run 'maqet db migrate'"), (["ls", "--force-migrate"], "run 'maqet db migrate'"),
                                     (["--no-auto-cleanup", "ls"], "drop the flag")] {
            let result = sandbox.maqet(arguments)
            result.assertExit(64)
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
            XCTAssertTrue(result.stderr.hasPrefix("maqet: \(arguments.first { $0.hasPrefix("--") }!) is a flag of the published maqet: "), result.stderr)
            assertContains(result.stderr, instead)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.databasePath), "nothing was opened")
        sandbox.maqet(["add", "--empty", "--name", "d"]).assertExit(0)
        let detailed = sandbox.maqet(["status", "d", "--detailed"])
        detailed.assertExit(64)
        assertContains(detailed.stderr, "for the details run 'maqet inspect NAME'")
    }

    /// --format yaml prints the same document as --format json, with every string that a YAML
    /// reader would take for something else quoted (read back with maqet.yaml.decode, YAML 1.2);
    /// status carries the VM's config as an object.
    func testYAMLIsTheJSONDocumentAndConfigsAreObjects() throws {
        let sandbox = makeSandbox()
        let config = sandbox.write("y.yaml", """
            memory: 64M
            cpu: 2
            arguments:
              - machine: none
              - {display: none}
              - {name: "123"}
              - {k: "off"}
              - {z: "null"}
            """)
        sandbox.maqet(["add", config, "--name", "y"]).assertExit(0)
        let reader = sandbox.write("same.lua", """
            local json, yaml = io.open(arg[1]):read("a"), io.open(arg[2]):read("a")
            print(maqet.json.encode(maqet.json.decode(json)) == maqet.json.encode(assert(maqet.yaml.decode(yaml))))
            """)
        for command in [["ls"], ["status", "y"], ["show-cmd", "y"], ["db", "status"], ["scripts", "list"]] {
            let json = sandbox.maqet(command + ["--format", "json"])
            json.assertExit(0)
            let yaml = sandbox.maqet(command + ["--format", "yaml"])
            yaml.assertExit(0)
            XCTAssertNotEqual(yaml.stdout, json.stdout)
            let same = sandbox.maqet(["run", reader, sandbox.write("o.json", json.stdout), sandbox.write("o.yaml", yaml.stdout)])
            same.assertExit(0)
            XCTAssertEqual(same.stdout, "true\n", "\(command): \(yaml.stdout)")
        }
        let status = object(sandbox.maqet(["status", "y", "--format", "json"]).stdout)
        let stored = try XCTUnwrap(status["config"] as? [String: Any])
        XCTAssertEqual(stored["cpu"] as? Int, 2)
        XCTAssertEqual((stored["arguments"] as? [Any])?.count, 5)
        XCTAssertEqual((status["summary"] as? [String: Any])?["storage_count"] as? Int, 0)
        // --format is also taken before the subcommand, as the published maqet did.
        XCTAssertEqual(sandbox.maqet(["--format", "json", "status", "y"]).stdout, sandbox.maqet(["status", "y", "--format", "json"]).stdout)
        let events = sandbox.maqet(["events", "--format", "yaml"])
        events.assertExit(64)
        assertContains(events.stderr, "use --format json")
    }

    /// maqet.conf in the config dir: data_dir (with ~), log_file, verbosity; an unknown key is a
    /// warning naming the key and the file; a flag beats the file; a broken file is refused.
    func testMaqetConfIsHonouredAndFlagsBeatIt() throws {
        let sandbox = makeSandbox()
        sandbox.write("xdg-config/maqet/maqet.conf", """
            directories:
              data_dir: ~/from-conf
            logging:
              verbosity: 3
              log_file: ~/maqet.log
              colour: true
            """)
        let added = sandbox.maqet(["add", "--empty", "--name", "c"], useDataDirOption: false)
        added.assertExit(0)
        XCTAssertEqual(added.stdout, "Added VM 'c'\n")
        let conf = sandbox.root.file("xdg-config/maqet/maqet.conf")
        assertContains(added.stderr, "maqet: warning: \(conf): 'logging.colour' has no meaning in maqet; ignored")
        assertContains(added.stderr, "maqet: info: added VM 'c'") // verbosity 3 is -vv, which shows info
        XCTAssertEqual(sqlite3(sandbox.root.file("from-conf/instances.db"), "SELECT name FROM vm_instances"), "c\n")
        let log = try String(contentsOfFile: sandbox.root.file("maqet.log"), encoding: .utf8)
        assertContains(log, "info: added VM 'c'")
        assertContains(log, "warning: \(conf): 'logging.colour' has no meaning")
        var info = stat()
        XCTAssertEqual(stat(sandbox.root.file("maqet.log"), &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)

        // The flag beats the file.
        sandbox.maqet(["add", "--empty", "--name", "f"]).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT name FROM vm_instances"), "f\n")

        // --maqet-config-dir is looked in first.
        let own = sandbox.root.file("own-config")
        sandbox.write("own-config/maqet.conf", "directories:\n  data_dir: elsewhere\n")
        sandbox.maqet(["--maqet-config-dir", own, "add", "--empty", "--name", "o"], useDataDirOption: false).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.root.file("own-config/elsewhere/instances.db"), "SELECT name FROM vm_instances"), "o\n",
                       "a relative path is relative to the file's directory")
        // ... and its scripts/ holds the user's edited workflow scripts.
        let edited = sandbox.write("own-config/scripts/lifecycle/show_cmd.lua", "return { run = function() return { command = 'edited' } end }\n")
        let shown = sandbox.maqet(["--maqet-config-dir", own, "show-cmd", "o"], useDataDirOption: false)
        shown.assertExit(0)
        XCTAssertEqual(shown.stdout, "edited\n")
        assertContains(sandbox.maqet(["scripts", "list", "--maqet-config-dir", own]).stdout, edited)

        // A file that is not usable is one error line naming it, and the command does nothing.
        let broken = sandbox.write("broken.conf", "logging:\n  verbosity: loud\n")
        sandbox.extraEnvironment["MAQET_CONFIG"] = broken
        let refused = sandbox.maqet(["add", "--empty", "--name", "never"], useDataDirOption: false)
        refused.assertExit(64)
        XCTAssertEqual(refused.stderr, "maqet: \(broken): 'logging.verbosity' must be 0, 1, 2 or 3, not 'loud'\n")
        XCTAssertEqual(sqlite3(sandbox.root.file("from-conf/instances.db"), "SELECT name FROM vm_instances"), "c\n")
    }

    /// --maqet-runtime-dir is the runtime directory itself (sockets, locks), for the start, the
    /// runner and every later command; --log-file gets the error line; --debug the traceback.
    func testRuntimeDirLogFileAndDebug() throws {
        let sandbox = makeSandbox()
        let runtime = ShortTempDir()
        let config = sandbox.write("r.yaml", "memory: 64M\narguments:\n  - machine: none\n")
        sandbox.maqet(["add", config, "--name", "r"]).assertExit(0)
        let started = sandbox.maqet(["--maqet-runtime-dir", runtime.path, "start", "r", "--format", "json"])
        started.assertExit(0)
        let socket = try XCTUnwrap(object(started.stdout)["qmp_socket_path"] as? String)
        XCTAssertTrue(socket.hasPrefix(runtime.path + "/"), socket)
        XCTAssertTrue(FileManager.default.fileExists(atPath: runtime.path + "/locks"))
        let qmp = sandbox.maqet(["qmp", "r", "query-status", "--compact", "--maqet-runtime-dir", runtime.path])
        qmp.assertExit(0)
        sandbox.maqet(["stop", "r", "--force", "--maqet-runtime-dir", runtime.path]).assertExit(0)
        // The 107-byte rule of socket paths holds for a runtime dir given by the flag too.
        let long = runtime.path + "/" + String(repeating: "d", count: 90)
        let refused = sandbox.maqet(["start", "r", "--maqet-runtime-dir", long])
        refused.assertExit(1)
        assertContains(refused.stderr, "longer than the 107 a Unix socket allows; give a shorter --maqet-runtime-dir")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances"), "stopped\n", "the refused start changed nothing")

        let log = sandbox.root.file("cli.log")
        sandbox.maqet(["--log-file", log, "status", "nope"]).assertExit(5)
        XCTAssertTrue(try String(contentsOfFile: log, encoding: .utf8).hasSuffix(" error: no VM named 'nope' (see 'maqet ls')\n"))

        let scripts = sandbox.root.file("scripts")
        sandbox.write("scripts/lifecycle/status.lua", """
            local function deeper() error("broken on purpose") end
            return { run = function() deeper() end }
            """)
        let short = sandbox.maqet(["status", "r", "--scripts-dir", scripts])
        short.assertExit(1)
        XCTAssertEqual(short.stderr.split(separator: "\n").count, 1, short.stderr)
        let full = sandbox.maqet(["--debug", "status", "r", "--scripts-dir", scripts])
        full.assertExit(1)
        assertContains(full.stderr, "stack traceback:")
        assertContains(full.stderr, "broken on purpose")
    }

    /// apply --binary/--enable-kvm, start --wait/--wait-for: what they mean here, and the words
    /// that mean nothing here get a line that says what to type instead.
    func testApplyAndStartFlagsOfThePublishedMaqet() throws {
        let sandbox = makeSandbox()
        sandbox.maqet(["add", "--empty", "--name", "k"]).assertExit(0)
        // A QEMU of the user's own, beside the caller (add/apply check that it is one).
        let fake = sandbox.write("bin/qemu-system-x86_64", "")
        try FileManager.default.removeItem(atPath: fake)
        try FileManager.default.createSymbolicLink(atPath: fake, withDestinationPath: "/usr/bin/qemu-system-x86_64")
        sandbox.maqet(["apply", "k", "--binary", "bin/qemu-system-x86_64"], cwd: sandbox.home).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT json_extract(config_data, '$.binary') FROM vm_instances"), fake + "\n",
                       "a relative --binary is relative to the caller's directory")
        sandbox.maqet(["apply", "k", "--binary", "qemu-system-x86_64", "--enable-kvm"]).assertExit(0)
        assertContains(sandbox.maqet(["show-cmd", "k"]).stdout, " -accel kvm -accel tcg ")

        for bad in ["ssh-ready", "boot-complete", "file-exists", "soon"] {
            let result = sandbox.maqet(["start", "k", "--wait-for", bad])
            result.assertExit(64)
            assertContains(result.stderr, "--wait-for '\(bad)' is not a condition maqet's start knows; ")
        }
        assertContains(sandbox.maqet(["start", "k", "--wait-for", "ssh-ready"]).stderr, "maqet wait NAME --console REGEX")
        sandbox.maqet(["start", "k", "--wait", "--no-wait"]).assertExit(64)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances"), "created\n", "the refusals started nothing")
        sandbox.maqet(["apply", "k", "--binary", "qemu-system-x86_64"]).assertExit(0)
        sandbox.write("k.yaml", "arguments:\n  - machine: none\n  - accel: tcg\n")
        sandbox.maqet(["apply", "k", sandbox.root.file("k.yaml")]).assertExit(0)
        let started = sandbox.maqet(["start", "k", "--wait", "--wait-for", "process-started", "-q"])
        started.assertExit(0)
        XCTAssertEqual(started.stdout, sqlite3(sandbox.databasePath, "SELECT id FROM vm_instances"))
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances"), "running\n", "--wait-for waited as start always does")
        sandbox.maqet(["stop", "k", "--force"]).assertExit(0)
    }
}
