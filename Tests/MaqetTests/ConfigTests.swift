import Foundation
import XCTest

/// VM definitions: `maqet.yaml`, `maqet add`, `maqet apply` and scripts/lib/config.lua, driven
/// through the real binary.
final class ConfigTests: XCTestCase {
    /// Tests/MaqetTests/Fixtures/configs.
    let configs = fixturePath("configs")
    func config(_ name: String) -> String { (configs as NSString).appendingPathComponent(name) }

    /// The stored config_data of VM `name`, parsed.
    func storedConfig(_ sandbox: Sandbox, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> NSDictionary? {
        let text = sqlite3(sandbox.databasePath, "SELECT config_data FROM vm_instances WHERE name = '\(name)'")
        guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary else {
            XCTFail("config_data of \(name) is not a JSON object: \(text.debugDescription)", file: file, line: line)
            return nil
        }
        return object
    }

    func json(_ text: String) -> NSDictionary {
        (try! JSONSerialization.jsonObject(with: Data(text.utf8))) as! NSDictionary
    }

    var baseExpected: NSDictionary {
        json("""
            {"arguments": [{"machine": "q35"}, {"accel": "kvm"}], "binary": "qemu-system-x86_64", "cpu": 1,
             "display": "none", "memory": "64M", "vga": "none",
             "storage": [{"name": "hdd", "type": "qcow2", "size": "16M", "interface": "virtio",
                          "file": "\(configs)/disks/base-hdd.qcow2"}]}
            """)
    }

    // MARK: maqet.yaml

    func testYAMLDecodeTypesAnchorsAndErrors() {
        let sandbox = Sandbox()
        let result = sandbox.runScript(#"""
            local v = assert(maqet.yaml.decode([[
            base: &b {memory: 64M, cpu: 2}
            vm:
              <<: *b
              cpu: 4
              copy: *b
            scalars: [yes, no, on, off, true, False, 12, -3, 0x1f, 0o17, 1.5, 2e3, "12", '', ~, null]
            empty_list: []
            empty_map: {}
            block: |
              two
              lines
            ]]))
            print(maqet.json.encode(v))
            print(math.type(v.scalars[7]), math.type(v.scalars[11]), v.scalars[15] == maqet.json.null)
            print(v.scalars[1] == "yes", v.scalars[5] == true, v.scalars[6] == false)
            local inf = maqet.yaml.decode("x: .inf\ny: -.inf\nz: .nan")
            print(inf.x == math.huge, inf.y == -math.huge, inf.z ~= inf.z)
            print(maqet.yaml.decode("a: [1, 2\nb: 3"))
            print(maqet.yaml.decode("a: 1\na: 2"))
            print(maqet.yaml.decode("a: *nothing"))
            print(maqet.yaml.decode("") == maqet.json.null)
            print(maqet.yaml.load_file("missing.yaml"))
            """#)
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(lines[0], #"{"base":{"cpu":2,"memory":"64M"},"block":"two\nlines\n","empty_list":[],"empty_map":{},"scalars":["yes","no","on","off",true,false,12,-3,31,15,1.5,2000.0,"12","",null,null],"vm":{"copy":{"cpu":2,"memory":"64M"},"cpu":4,"memory":"64M"}}"#)
        XCTAssertEqual(lines[1], "integer\tfloat\ttrue")
        XCTAssertEqual(lines[2], "true\ttrue\ttrue")
        XCTAssertEqual(lines[3], "true\ttrue\ttrue")
        XCTAssertTrue(lines[4].hasPrefix("nil\tmaqet.yaml.decode: did not find expected ',' or ']' at line 2 column 2"), lines[4])
        XCTAssertTrue(lines[4].hasSuffix("\tEYAML"), lines[4])
        XCTAssertEqual(lines[5], "nil\tmaqet.yaml.decode: duplicate key 'a' in a mapping at line 1 column 1\tEYAML")
        XCTAssertTrue(lines[6].hasPrefix("nil\tmaqet.yaml.decode: found undefined alias at line 1 column 4"), lines[6])
        XCTAssertEqual(lines[7], "true")
        XCTAssertEqual(lines[8], "nil\tmaqet.yaml.load_file missing.yaml: No such file or directory\tENOENT")
    }

    // MARK: add

    func testAddFromPositionalAndFromVMConfig() {
        let sandbox = Sandbox()
        let positional = sandbox.maqet(["add", config("base.yaml"), "--name", "one"])
        positional.assertExit(0)
        XCTAssertEqual(positional.stdout, "Added VM 'one'\n")
        XCTAssertEqual(positional.stderr, "")
        let option = sandbox.maqet(["add", "--vm-config", config("base.yaml"), "--name", "two"])
        option.assertExit(0)
        XCTAssertEqual(storedConfig(sandbox, "one"), baseExpected)
        XCTAssertEqual(storedConfig(sandbox, "two"), baseExpected)

        let rows = sqlite3(sandbox.databasePath, "SELECT id, name, config_path, status FROM vm_instances ORDER BY name")
            .split(separator: "\n").map { $0.split(separator: "|", omittingEmptySubsequences: false).map(String.init) }
        XCTAssertEqual(rows.count, 2)
        for row in rows {
            XCTAssertNotNil(row[0].wholeMatch(of: #/[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}/#), row[0])
            XCTAssertEqual(row[2], config("base.yaml"))
            XCTAssertEqual(row[3], "created")
        }
        XCTAssertNotEqual(rows[0][0], rows[1][0])

        // A relative path on the command line is taken from the current directory.
        let relative = sandbox.maqet(["add", "base.yaml", "--name", "three"], cwd: configs)
        relative.assertExit(0)
        XCTAssertEqual(storedConfig(sandbox, "three"), baseExpected)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT config_path FROM vm_instances WHERE name = 'three'"), config("base.yaml") + "\n")
    }

    func testSeveralFilesMergeInOrderWithPathsFromEachFilesDirectory() {
        let sandbox = Sandbox()
        let result = sandbox.maqet(["add", config("base.yaml"), config("override.yaml"), "--vm-config", config("sub/extra.yaml"), "--name", "merged"])
        result.assertExit(0)
        let expected = json("""
            {"arguments": [{"machine": "pc"}, {"accel": "kvm"}, {"boot": "order=n,menu=off"}],
             "binary": "qemu-system-x86_64", "cpu": 2, "description": "base with more memory",
             "display": "none", "memory": "128M", "vga": "none", "tags": ["test", "extra"],
             "storage": [
               {"name": "hdd", "type": "qcow2", "size": "32M", "interface": "virtio", "file": "\(configs)/disks/base-hdd.qcow2"},
               {"name": "data", "type": "raw", "size": "8M", "file": "\(configs)/data.img"},
               {"name": "share", "type": "virtfs", "mount_tag": "host", "path": "\(configs)/shared"}]}
            """)
        XCTAssertEqual(storedConfig(sandbox, "merged"), expected)
        // config_path is the first file.
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT config_path FROM vm_instances WHERE name = 'merged'"), config("base.yaml") + "\n")

        // Order matters: base over override brings q35 and 64M back.
        sandbox.maqet(["add", config("override.yaml"), config("base.yaml"), "--name", "reversed"]).assertExit(0)
        let reversed = storedConfig(sandbox, "reversed")
        XCTAssertEqual(reversed?["memory"] as? String, "64M")
        XCTAssertEqual((reversed?["arguments"] as? [NSDictionary])?.first, ["machine": "q35"])
        XCTAssertEqual((reversed?["storage"] as? [NSDictionary])?.first?["size"] as? String, "16M")

        // A later null removes a key.
        let dropper = sandbox.write("drop.yaml", "vga: ~\n")
        sandbox.maqet(["add", config("base.yaml"), dropper, "--name", "dropped"]).assertExit(0)
        XCTAssertNil(storedConfig(sandbox, "dropped")?["vga"])
    }

    func testNamePrecedenceAndGeneratedName() {
        let sandbox = Sandbox()
        sandbox.maqet(["add", config("named.yaml")]).assertExit(0)
        sandbox.maqet(["add", config("named.yaml"), "--name", "beta"]).assertExit(0)
        let generated = sandbox.maqet(["add", config("base.yaml")])
        generated.assertExit(0)
        let names = sqlite3(sandbox.databasePath, "SELECT name FROM vm_instances ORDER BY name").split(separator: "\n").map(String.init)
        XCTAssertEqual(names.count, 3)
        XCTAssertEqual(Array(names.prefix(2)), ["alpha", "beta"])
        XCTAssertNotNil(names[2].wholeMatch(of: #/vm-[0-9a-f]{8}/#), names[2])
        XCTAssertEqual(generated.stdout, "Added VM '\(names[2])'\n")
        // The name lives in the name column, not in config_data.
        XCTAssertNil(storedConfig(sandbox, "alpha")?["name"])
    }

    func testEmptyVM() {
        let sandbox = Sandbox()
        let result = sandbox.maqet(["add", "--empty", "--name", "delta-empty", "--format", "json"])
        result.assertExit(0)
        let output = json(result.stdout)
        XCTAssertEqual(output["name"] as? String, "delta-empty")
        XCTAssertEqual(output["config"] as? NSDictionary, [:])
        XCTAssertTrue(output["config_path"] is NSNull)
        XCTAssertEqual(vmRows(sandbox.databasePath, columns: ["name", "config_path", "config_data", "status"]), "'delta-empty'|NULL|'{}'|'created'\n")
        let both = sandbox.maqet(["add", "--empty", config("base.yaml")])
        both.assertExit(64)
        XCTAssertEqual(both.stderr, "maqet: --empty creates a VM without a config; do not also give config files\n")
    }

    func testUnknownKeyWarnsAndStillAdds() {
        let sandbox = Sandbox()
        let file = sandbox.write("colour.yaml", "memory: 64M\ncolour: blue\n")
        let result = sandbox.maqet(["add", file, "--name", "c"])
        result.assertExit(0)
        XCTAssertTrue(result.stderr.hasPrefix("maqet: warning: \(file): unknown key 'colour'"), result.stderr)
        XCTAssertEqual(storedConfig(sandbox, "c")?["colour"] as? String, "blue")
    }

    /// Every §1 refusal: its exit code, one line on stderr naming the problem, and no change to the
    /// database (sqlite3 .dump is the same before and after).
    func testARefusedAddOnANewDataDirectoryLeavesNothingBehind() {
        let sandbox = Sandbox()
        let refused = sandbox.maqet(["add", "--name", "a b", config("base.yaml")])
        refused.assertExit(64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.dataDir), "a refused add created \(sandbox.dataDir)")
        // A data directory the user made is kept; only the database the refused run created goes.
        try? FileManager.default.createDirectory(atPath: sandbox.dataDir, withIntermediateDirectories: true)
        sandbox.maqet(["apply", "x", "--memory", "lots"]).assertExit(64)
        XCTAssertEqual((try? FileManager.default.contentsOfDirectory(atPath: sandbox.dataDir)) ?? ["missing"], [])
        // With a database already there, a refusal leaves it as it was.
        sandbox.maqet(["add", "--name", "ok", config("base.yaml")]).assertExit(0)
        let before = sqlite3(sandbox.databasePath, ".dump")
        sandbox.maqet(["add", "--name", "ok", config("base.yaml")]).assertExit(1)
        XCTAssertEqual(sqlite3(sandbox.databasePath, ".dump"), before)
    }

    func testRefusalsAreOneLineAndWriteNothing() {
        let sandbox = Sandbox()
        sandbox.maqet(["add", config("base.yaml"), "--name", "dup"]).assertExit(0)
        let notExecutable = sandbox.write("bin/qemu-fake", "#!/bin/sh\n")
        chmod(notExecutable, 0o644)
        func file(_ name: String, _ text: String) -> String { sandbox.write(name, text) }
        let cases: [(label: String, args: [String], code: Int32, message: String)] = [
            ("empty name", ["--name", "", config("base.yaml")], 64, "a VM name must not be empty"),
            ("65 chars", ["--name", String(repeating: "a", count: 65), config("base.yaml")], 64, "at most 64 characters"),
            ("leading dash", ["--name=-x", config("base.yaml")], 64, "must not start with '-' or '.'"),
            ("leading dot", ["--name", ".x", config("base.yaml")], 64, "must not start with '-' or '.'"),
            ("space", ["--name", "a b", config("base.yaml")], 64, "may only contain letters, digits"),
            ("slash", ["--name", "a/b", config("base.yaml")], 64, "may only contain letters, digits"),
            ("bad name in config", [file("n.yaml", "name: 'a b'\n")], 64, "n.yaml: name: VM name 'a b'"),
            ("duplicate", ["--name", "dup", config("base.yaml")], 1, "a VM named 'dup' already exists"),
            ("missing binary", [file("b1.yaml", "binary: /nonexistent/qemu-system-x86_64\n"), "--name", "x"], 64,
             "b1.yaml: binary: /nonexistent/qemu-system-x86_64 does not exist"),
            ("binary not in PATH", [file("b2.yaml", "binary: qemu-system-nonexistent\n"), "--name", "x"], 64,
             "binary: qemu-system-nonexistent not found in PATH"),
            ("not executable", [file("b3.yaml", "binary: bin/qemu-fake\n"), "--name", "x"], 64,
             "binary: \(notExecutable) is not executable"),
            ("memory lots", [file("m.yaml", "memory: lots\n"), "--name", "x"], 64, "m.yaml: memory: 'lots' is not an amount of memory"),
            ("cpu zero", [file("c.yaml", "cpu: 0\n"), "--name", "x"], 64, "cpu: 0 is not a positive whole number"),
            ("bad size", [file("s.yaml", "storage:\n  - {name: hdd, type: qcow2, file: d.qcow2, size: huge}\n"), "--name", "x"], 64,
             "s.yaml: storage 'hdd': size 'huge' is not a size"),
            ("storage in /etc", [file("e.yaml", "storage:\n  - {name: hdd, type: qcow2, file: /etc/x.qcow2}\n"), "--name", "x"], 64,
             "storage 'hdd': file /etc/x.qcow2 is in the system directory /etc"),
            ("storage in /etc via ..", [file("e2.yaml", "storage:\n  - {name: hdd, type: raw, file: /tmp/../usr/lib/x.img}\n"), "--name", "x"], 64,
             "is in the system directory /usr"),
            ("unknown storage type", [file("t.yaml", "storage:\n  - {name: hdd, type: vmdk, file: d.vmdk}\n"), "--name", "x"], 64,
             "storage 'hdd': type 'vmdk' is not one of qcow2, raw, virtfs"),
            ("missing storage name", [file("nn.yaml", "storage:\n  - {type: qcow2, file: d.qcow2}\n"), "--name", "x"], 64,
             "storage[1]: name is required"),
            ("duplicate storage name", [file("dn.yaml", "storage:\n  - {name: a, type: qcow2, file: a.qcow2}\n  - {name: a, type: raw, file: b.img}\n"), "--name", "x"], 64,
             "storage 'a': the name is used twice"),
            ("virtfs without path", [file("v.yaml", "storage:\n  - {name: s, type: virtfs, mount_tag: t}\n"), "--name", "x"], 64,
             "storage 's': path must be a path"),
            ("bad argument", [file("a.yaml", "arguments:\n  - [q35, kvm]\n"), "--name", "x"], 64,
             "arguments[1]: "),
            ("invalid YAML", [file("y.yaml", "memory: [64M\n"), "--name", "x"], 64, "invalid YAML in \(sandbox.root.file("y.yaml")): "),
            ("a list, not a mapping", [file("l.yaml", "- memory: 64M\n"), "--name", "x"], 64, "a VM config must be a mapping"),
            ("missing file", [sandbox.root.file("nope.yaml"), "--name", "x"], 5, "cannot read config file \(sandbox.root.file("nope.yaml")): No such file or directory"),
            ("no file at all", ["--name", "x"], 64, "give a config file"),
        ]
        let before = dump(sandbox.databasePath)
        let filesBefore = sandbox.dataFiles("")
        for c in cases {
            let result = sandbox.maqet(["add"] + c.args, cwd: sandbox.home)
            XCTAssertEqual(result.code, c.code, "\(c.label): exit \(result.code)\n\(result.stderr)")
            XCTAssertTrue(result.stderr.hasPrefix("maqet: "), "\(c.label): \(result.stderr)")
            XCTAssertEqual(result.stderr.filter { $0 == "\n" }.count, 1, "\(c.label): not one line: \(result.stderr)")
            assertContains(result.stderr, c.message)
            XCTAssertEqual(result.stdout, "", c.label)
        }
        XCTAssertEqual(dump(sandbox.databasePath), before)
        XCTAssertEqual(sandbox.dataFiles(""), filesBefore, "a refusal left a file behind")
    }

    // MARK: apply

    func testApplyChangesAStoppedVMAfterABackupThatRestoreUndoes() {
        let sandbox = Sandbox()
        sandbox.maqet(["add", config("base.yaml"), "--name", "web"]).assertExit(0)
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'stopped' WHERE name = 'web'")
        let oldConfig = sqlite3(sandbox.databasePath, "SELECT config_data FROM vm_instances WHERE name = 'web'")
        XCTAssertEqual(sandbox.automaticBackups, [])

        let result = sandbox.maqet(["apply", "web", "--memory", "256M", "--cpu", "2"])
        result.assertExit(0)
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
        let backup = (sandbox.dataDir as NSString).appendingPathComponent(sandbox.automaticBackups[0])
        XCTAssertEqual(result.stdout, """
            Changed VM 'web':
              cpu: 1 -> 2
              memory: 64M -> 256M
            Backup of the previous state: \(backup) (undo with 'maqet db restore \(backup)')

            """)
        let changed = storedConfig(sandbox, "web")
        XCTAssertEqual(changed?["memory"] as? String, "256M")
        XCTAssertEqual(changed?["cpu"] as? Int, 2)
        XCTAssertEqual(changed?["storage"] as? NSArray, baseExpected["storage"] as? NSArray)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances WHERE name = 'web'"), "stopped\n")

        // A file over the stored config: merged the same way as add.
        let more = sandbox.maqet(["apply", "web", config("override.yaml"), "--format", "json"])
        more.assertExit(0)
        let report = json(more.stdout)
        XCTAssertEqual(report["created"] as? Bool, false)
        XCTAssertEqual((report["changes"] as? [NSDictionary])?.compactMap { $0["key"] as? String }, ["arguments", "description", "memory", "storage"])
        XCTAssertEqual(storedConfig(sandbox, "web")?["cpu"] as? Int, 2, "the file's cpu: 2 equals the flag's")

        sandbox.maqet(["db", "restore", backup]).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT config_data FROM vm_instances WHERE name = 'web'"), oldConfig)

        // Nothing to change: no backup, says so.
        let backups = sandbox.automaticBackups
        let same = sandbox.maqet(["apply", "web", "--memory", "64M"])
        same.assertExit(0)
        XCTAssertEqual(same.stdout, "VM 'web' unchanged (the config already says that)\n")
        XCTAssertEqual(sandbox.automaticBackups, backups)
    }

    func testApplyRefusedWhileRunningAndForBadValues() {
        let sandbox = Sandbox()
        sandbox.maqet(["add", config("base.yaml"), "--name", "web"]).assertExit(0)
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'running' WHERE name = 'web'")
        let before = dump(sandbox.databasePath)
        let running = sandbox.maqet(["apply", "web", "--memory", "256M"])
        running.assertExit(1)
        XCTAssertEqual(running.stderr, "maqet: VM 'web' is running; stop it first (maqet stop web), then apply the change\n")
        XCTAssertEqual(dump(sandbox.databasePath), before)
        XCTAssertEqual(sandbox.automaticBackups, [])

        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'stopped' WHERE name = 'web'")
        let stopped = dump(sandbox.databasePath)
        let lots = sandbox.maqet(["apply", "web", "--memory", "lots"])
        lots.assertExit(64)
        XCTAssertEqual(lots.stderr, "maqet: --memory: memory: 'lots' is not an amount of memory (write it like 512M, 2G, or a number of MiB)\n")
        let cpu = sandbox.maqet(["apply", "web", "--cpu", "0"])
        cpu.assertExit(64)
        XCTAssertEqual(cpu.stderr, "maqet: --cpu: cpu: 0 is not a positive whole number of CPUs\n")
        let badName = sandbox.maqet(["apply", "a/b", "--cpu", "1"])
        badName.assertExit(64)
        XCTAssertEqual(dump(sandbox.databasePath), stopped)
        XCTAssertEqual(sandbox.automaticBackups, [])
    }

    func testApplyCreatesAMissingVM() {
        let sandbox = Sandbox()
        let result = sandbox.maqet(["apply", "fresh", config("base.yaml"), "--cpu", "4"])
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "Created VM 'fresh' (it did not exist)\n")
        let expected = baseExpected.mutableCopy() as! NSMutableDictionary
        expected["cpu"] = 4
        XCTAssertEqual(storedConfig(sandbox, "fresh"), expected)
        XCTAssertEqual(vmRows(sandbox.databasePath, columns: ["name", "config_path", "status"]), "'fresh'|'\(config("base.yaml"))'|'created'\n")
    }
}

/// The host functions behind the config library: maqet.fs and maqet.backup_state.
final class ConfigHostFunctionTests: XCTestCase {
    func testFileSystemFunctions() {
        let sandbox = Sandbox()
        sandbox.write("prog", "#!/bin/sh\n")
        chmod(sandbox.root.file("prog"), 0o755)
        sandbox.write("data.txt", "x")
        symlink("/etc", sandbox.root.file("etc-link"))
        let result = sandbox.runScript("""
            local info = assert(maqet.fs.stat("prog"))
            print(info.type, info.size, info.executable, info.readable, ("%o"):format(info.mode))
            print(maqet.fs.stat("data.txt").executable, maqet.fs.stat(".").type)
            print(maqet.fs.stat("missing"))
            print(maqet.fs.realpath("etc-link/x/../y.qcow2"), maqet.fs.realpath("/tmp/../usr/./lib") )
            print(maqet.fs.realpath("new/disk.qcow2") == maqet.fs.cwd() .. "/new/disk.qcow2")
            print(maqet.fs.which("sh") ~= nil, maqet.fs.which("./prog"))
            print(maqet.fs.which("no-such-program-here"))
            print(maqet.fs.which("./data.txt"))
            """)
        result.assertExit(0)
        let home = URL(fileURLWithPath: sandbox.home).resolvingSymlinksInPath().path
        XCTAssertEqual(result.stdout, """
            file\t10\ttrue\ttrue\t755
            false\tdirectory
            nil\tmaqet.fs.stat missing: No such file or directory\tENOENT
            /etc/y.qcow2\t/usr/lib
            true
            true\t./prog
            nil\tmaqet.fs.which: no-such-program-here not found in PATH\tENOENT
            nil\tmaqet.fs.which: ./data.txt is not an executable file\tEACCES

            """, "home \(home)")
    }

    func testBackupStateTakesAVerifiedAutomaticBackupAndPrunes() {
        let sandbox = Sandbox()
        sandbox.extraEnvironment["MAQET_KEEP_BACKUPS"] = "2"
        sandbox.maqet(["add", "--empty", "--name", "one"]).assertExit(0)
        let result = sandbox.runScript("""
            local paths = {}
            for i = 1, 3 do paths[i] = assert(maqet.backup_state()) end
            for _, p in ipairs(paths) do print(p) end
            """)
        result.assertExit(0)
        let printed = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(printed.count, 3)
        let kept = sandbox.automaticBackups.map { (sandbox.dataDir as NSString).appendingPathComponent($0) }
        XCTAssertEqual(kept, Array(printed.suffix(2)), "keeps the newest 2")
        XCTAssertEqual(sqlite3(kept[1], "SELECT name FROM vm_instances"), "one\n")
    }

    func testSymlinkIntoASystemDirectoryIsRefused() {
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        symlink("/etc", sandbox.root.file("disks"))
        let file = sandbox.write("vm.yaml", "storage:\n  - {name: hdd, type: qcow2, file: disks/hdd.qcow2}\n")
        let before = dump(sandbox.databasePath)
        let result = sandbox.maqet(["add", file, "--name", "x"])
        result.assertExit(64)
        XCTAssertEqual(result.stderr, "maqet: \(file): storage 'hdd': file \(sandbox.root.file("disks/hdd.qcow2")) (/etc/hdd.qcow2) is in the system directory /etc; keep disks and shared folders elsewhere, or list it in allow_system_paths\n")
        XCTAssertEqual(dump(sandbox.databasePath), before)
    }

    func testArgumentFlagsMergeByThemselvesAndWarnings() {
        let sandbox = Sandbox()
        let a = sandbox.write("a.yaml", "arguments: [no-reboot, {machine: q35}, {nographic: ~}]\nstorage:\n  - {name: s, type: virtfs, path: share, colour: red}\n")
        let b = sandbox.write("b.yaml", "name: other\narguments: [{machine: pc}, no-reboot, snapshot]\nmemory: .inf\n")
        let bad = sandbox.maqet(["add", a, b, "--name", "x"])
        bad.assertExit(64)
        assertContains(bad.stderr, "maqet: \(b): memory: infinity and NaN cannot be stored")
        let c = sandbox.write("c.yaml", "name: other\narguments: [{machine: pc}, no-reboot, snapshot]\n")
        let result = sandbox.maqet(["add", a, c, "--name", "x"])
        result.assertExit(0)
        XCTAssertEqual(result.stderr, "maqet: warning: \(c): arguments machine replaces the one from \(a)\n"
                       + "maqet: warning: \(a): storage 's': unknown key 'colour' (kept, but maqet does not use it)\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT json_extract(config_data, '$.arguments') FROM vm_instances"),
                       #"["no-reboot",{"machine":"pc"},{"nographic":null},"snapshot"]"# + "\n")

        let renamed = sandbox.maqet(["apply", "x", c])
        renamed.assertExit(0)
        XCTAssertEqual(renamed.stderr, "maqet: warning: \(c): name: 'other' ignored; apply keeps the VM's name 'x'\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT name FROM vm_instances"), "x\n")
    }
}
