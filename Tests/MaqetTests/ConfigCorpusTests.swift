import Foundation
import XCTest

/// The corpus of VM definitions in the published maqet's style (Tests/MaqetTests/Fixtures/corpus,
/// format in Fixtures/README.md): `maqet add` then `maqet show-cmd` must give each case's argv
/// exactly, through the real binary.
final class ConfigCorpusTests: XCTestCase {
    let corpus = fixturePath("corpus")

    /// maqet's own plumbing, the one thing the comparison leaves out: `-name guest=NAME`, and the
    /// console and monitor sockets (`-chardev socket,id=maqet-…`, `-mon chardev=maqet-…`,
    /// `-serial chardev:maqet-console`). Everything else must be in the fixture.
    static func withoutPlumbing(_ argv: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < argv.count {
            let word = argv[i], next = i + 1 < argv.count ? argv[i + 1] : ""
            let plumbing = (word == "-name" && next.hasPrefix("guest="))
                || (word == "-chardev" && next.hasPrefix("socket,id=maqet-"))
                || (word == "-mon" && next.hasPrefix("chardev=maqet-"))
                || (word == "-serial" && next.hasPrefix("chardev:maqet-"))
            if plumbing { i += 2; continue }
            out.append(word)
            i += 1
        }
        return out
    }

    /// A case's expected argv: its .argv lines without `#` comments and blank lines, with @DIR@
    /// (the corpus folder), @HOME@, @DATA@ (maqet's data dir) and @ID@ (the VM's id) filled in.
    func expected(_ stem: String, sandbox: Sandbox, id: String) -> [String] {
        let text = (try? String(contentsOfFile: "\(corpus)/\(stem).argv", encoding: .utf8)) ?? ""
        return text.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
            .filter { !$0.hasPrefix("#") && !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            .map {
                $0.replacingOccurrences(of: "@DIR@", with: corpus)
                    .replacingOccurrences(of: "@HOME@", with: sandbox.home)
                    .replacingOccurrences(of: "@DATA@", with: sandbox.dataDir)
                    .replacingOccurrences(of: "@ID@", with: id)
            }
    }

    /// The first difference between two argv lists, for the failure message.
    func diff(_ want: [String], _ got: [String]) -> String {
        var lines: [String] = []
        for i in 0..<max(want.count, got.count) {
            let w = i < want.count ? want[i] : "(nothing)", g = i < got.count ? got[i] : "(nothing)"
            lines.append("\(w == g ? " " : "!") [\(i)] want \(w)\(w == g ? "" : "\n      got  \(g)")")
        }
        return lines.joined(separator: "\n")
    }

    func testEveryCorpusCaseGivesItsArgv() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: corpus)
        let stems = names.filter { $0.hasSuffix(".argv") }.map { String($0.dropLast(5)) }.sorted()
        XCTAssertGreaterThanOrEqual(stems.count, 16, "the corpus lost cases")
        let sandbox = Sandbox()
        var failures: [String] = []
        for stem in stems {
            // The case's file, then its overlays (NAME.over.yaml, NAME.over2.yaml, …) in name order.
            let overlays = names.filter { $0.hasPrefix(stem + ".over") && $0.hasSuffix(".yaml") }.sorted()
            let files = (["\(stem).yaml"] + overlays).map { "\(corpus)/\($0)" }
            let add = sandbox.maqet(["add"] + files + ["--name", stem], cwd: sandbox.home)
            guard add.code == 0 else {
                failures.append("\(stem): add exited \(add.code): \(add.stderr)")
                continue
            }
            if let warnings = try? String(contentsOfFile: "\(corpus)/\(stem).warn", encoding: .utf8) {
                for line in warnings.split(separator: "\n") where !line.isEmpty && !add.stderr.contains(line) {
                    failures.append("\(stem): add did not warn '\(line)'; its stderr:\n\(add.stderr)")
                }
            } else if !add.stderr.isEmpty {
                failures.append("\(stem): add warned, and the case has no .warn file:\n\(add.stderr)")
            }
            let shown = sandbox.maqet(["show-cmd", stem, "--format", "json"])
            guard shown.code == 0,
                  let object = try? JSONSerialization.jsonObject(with: Data(shown.stdout.utf8)) as? [String: Any],
                  let argv = object["argv"] as? [String] else {
                failures.append("\(stem): show-cmd exited \(shown.code): \(shown.stderr)\(shown.stdout)")
                continue
            }
            let id = sqlite3(sandbox.databasePath, "SELECT id FROM vm_instances WHERE name = '\(stem)'")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let want = expected(stem, sandbox: sandbox, id: id)
            let got = Self.withoutPlumbing(argv)
            if want != got { failures.append("\(stem): show-cmd differs from \(stem).argv:\n\(diff(want, got))") }
        }
        XCTAssertTrue(failures.isEmpty, "\n" + failures.joined(separator: "\n\n"))
    }

    /// The plumbing filter takes maqet's own words and nothing else (so the corpus comparison can fail).
    func testThePlumbingFilterKeepsEverythingElse() {
        let argv = ["qemu-system-x86_64", "-name", "guest=x", "-serial", "none", "-chardev", "socket,id=c0,path=/s",
                    "-chardev", "socket,id=maqet-client,path=/q", "-mon", "chardev=maqet-client,mode=control",
                    "-serial", "chardev:maqet-console", "-name", "other"]
        XCTAssertEqual(Self.withoutPlumbing(argv),
                       ["qemu-system-x86_64", "-serial", "none", "-chardev", "socket,id=c0,path=/s", "-name", "other"])
    }

    /// `add a b`, `add --vm-config a b` and `add a --vm-config b` merge a, then b (b wins); so does `apply`.
    func testConfigFilesMergeInTheOrderTyped() {
        let sandbox = Sandbox()
        let a = sandbox.write("a.yaml", "binary: qemu-system-x86_64\nmemory: 128M\narguments: [{machine: q35}]\n")
        let b = sandbox.write("b.yaml", "memory: 256M\narguments: [{machine: pc}]\n")
        let forms: [(String, [String])] = [
            ("positional", [a, b]),
            ("vm-config list", ["--vm-config", a, b]),
            ("mixed", [a, "--vm-config", b]),
            ("vm-config twice", ["--vm-config", a, "--vm-config", b]),
            ("vm-config first", ["--vm-config", a, "--name", "placeholder-unused", b]),
        ]
        for (i, form) in forms.enumerated() {
            var args = form.1
            if let at = args.firstIndex(of: "placeholder-unused") { args[at] = "v\(i)" } else { args += ["--name", "v\(i)"] }
            let result = sandbox.maqet(["add"] + args)
            result.assertExit(0)
            XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT json_extract(config_data, '$.memory'), json_extract(config_data, '$.arguments') FROM vm_instances WHERE name = 'v\(i)'"),
                           #"256M|[{"machine":"pc"}]"# + "\n", form.0)
            assertContains(result.stderr, "\(b): memory replaces the one from \(a)")
        }
        sandbox.maqet(["apply", "v0", "--vm-config", b, a]).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT json_extract(config_data, '$.memory') FROM vm_instances WHERE name = 'v0'"), "128M\n")
    }

    /// A size and no file: start makes the image under the data dir, records it, and
    /// `rm --delete-storage` deletes it.
    func testScratchImageIsMadeAtStartAndDeletedWithTheVM() {
        let sandbox = Sandbox()
        let file = sandbox.write("s.yaml", "binary: qemu-system-x86_64\narguments: [{machine: none}]\nstorage:\n  - {name: scratch, type: raw, size: 1M, interface: none}\n")
        sandbox.maqet(["add", file, "--name", "s"]).assertExit(0)
        let id = sqlite3(sandbox.databasePath, "SELECT id FROM vm_instances WHERE name = 's'").trimmingCharacters(in: .whitespacesAndNewlines)
        let image = "\(sandbox.dataDir)/disks/\(id)-scratch.raw"
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT json_extract(config_data, '$.storage[0].file') FROM vm_instances"), image + "\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: image), "add must not create it")
        sandbox.maqet(["start", "s"]).assertExit(0)
        defer { sandbox.maqet(["stop", "s", "--force"]) }
        XCTAssertEqual((try? FileManager.default.attributesOfItem(atPath: image))?[.size] as? Int, 1 << 20)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT storage_path FROM storage_registry WHERE vm_name = 's'"), image + "\n")
        sandbox.maqet(["stop", "s", "--force"]).assertExit(0)
        sandbox.maqet(["rm", "s", "--delete-storage"]).assertExit(0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: image))

        // Neither a file nor a size: one line, nothing stored.
        let bad = sandbox.write("b.yaml", "storage:\n  - {name: d, type: qcow2}\n")
        let refused = sandbox.maqet(["add", bad, "--name", "b"])
        refused.assertExit(64)
        XCTAssertEqual(refused.stderr, "maqet: \(bad): storage 'd': needs a file, or a size to make a new image with (size: 10G)\n")
    }

    /// Unknown and ignored keys warn at add and apply (naming the file and the key), and at the
    /// start of a row maqet never checked (adopted as the published maqet wrote it), not after.
    func testUnknownAndIgnoredKeysWarnAtAddApplyAndAdoptedStart() {
        let sandbox = Sandbox()
        let file = sandbox.write("u.yaml", "binary: qemu-system-x86_64\nenable_kvm: true\nstorage:\n"
            + "  - {name: share, type: virtfs, path: /var/tmp/maqet-corpus-share, size: 1G}\n")
        let added = sandbox.maqet(["add", file, "--name", "u"])
        added.assertExit(0)
        assertContains(added.stderr, "maqet: warning: \(file): unknown key 'enable_kvm'")
        assertContains(added.stderr, "maqet: warning: \(file): storage 'share': key 'size' is ignored for type virtfs")
        let overlay = sandbox.write("o.yaml", "ssh_port: 2222\n")
        let applied = sandbox.maqet(["apply", "u", overlay])
        applied.assertExit(0)
        assertContains(applied.stderr, "maqet: warning: \(overlay): unknown key 'ssh_port'")
        XCTAssertFalse(applied.stderr.contains("enable_kvm"), "a stored key warns once, at add: \(applied.stderr)")

        // The published maqet's json.dumps text: never checked by maqet.
        let id = UUID().uuidString.lowercased()
        let config = #"{"binary": "qemu-system-x86_64", "arguments": [{"machine": "none"}], "network": "user"}"#
        XCTAssertEqual(runProcess("/usr/bin/sqlite3", [sandbox.databasePath,
            "INSERT INTO vm_instances (id, name, config_data, status) VALUES ('\(id)', 'adopted', '\(config)', 'created')"],
            environment: ProcessInfo.processInfo.environment).code, 0)
        let started = sandbox.maqet(["start", "adopted"])
        defer { sandbox.maqet(["stop", "adopted", "--force"]) }
        started.assertExit(0)
        XCTAssertEqual(started.stderr, "maqet: warning: VM 'adopted' (its config was never checked by maqet): unknown key 'network' "
            + "(kept, but maqet does not use it; known keys: name, binary, binary_is_qemu, memory, cpu, display, vga, arguments, args, "
            + "storage, serial, description, tags, panic_device, on_panic, allow_system_paths); fix it with 'maqet apply adopted'\n")
        sandbox.maqet(["stop", "adopted", "--force"]).assertExit(0)
        // Once maqet stored it (apply), start is quiet.
        sandbox.maqet(["apply", "adopted", "--memory", "64M"]).assertExit(0)
        let again = sandbox.maqet(["start", "adopted"])
        again.assertExit(0)
        XCTAssertEqual(again.stderr, "")
        sandbox.maqet(["stop", "adopted", "--force"]).assertExit(0)
    }

    /// A row adopted from the published maqet keeps the key order its JSON has (json.dumps keeps
    /// the file's), which its multi-key items need: {netdev: user, id: n0} is `-netdev user,id=n0`,
    /// not an option named after the first key of some fixed order.
    func testAnAdoptedRowIsRenderedInItsJSONKeyOrder() {
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0) // creates the database
        let id = UUID().uuidString.lowercased()
        let config = #"{"binary": "qemu-system-x86_64", "arguments": [{"netdev": "user", "id": "n0", "hostfwd": "tcp::2222-:22"}, "#
            + #"{"device": {"netdev": "n0", "driver": "virtio-net-pci"}}, {"display": "none", "show-cursor": "on"}]}"#
        XCTAssertEqual(runProcess("/usr/bin/sqlite3", [sandbox.databasePath,
            "INSERT INTO vm_instances (id, name, config_data, status) VALUES ('\(id)', 'adopted', '\(config)', 'created')"],
            environment: ProcessInfo.processInfo.environment).code, 0)
        let shown = sandbox.maqet(["show-cmd", "adopted"])
        shown.assertExit(0)
        assertContains(shown.stdout, " -netdev user,id=n0,hostfwd=tcp::2222-:22 ")
        assertContains(shown.stdout, " -device netdev=n0,driver=virtio-net-pci ")
        assertContains(shown.stdout, " -display none,show-cursor=on")

        // The mechanism: maqet.json.decode(text, {ordered = true}) lists each object's keys.
        let decoded = sandbox.runScript("""
            local t = maqet.json.decode('{"b": 1, "a": {"z": 2, "y": 3}, "b": 4}', { ordered = true })
            print(table.concat(getmetatable(t).__keys, ","), table.concat(getmetatable(t.a).__keys, ","), t.b)
            print(getmetatable(maqet.json.decode('{"b": 1, "a": 2}')))
            print(pcall(maqet.json.decode, "{}", 42))
            """, name: "ordered.lua")
        decoded.assertExit(0)
        assertContains(decoded.stdout, "b,a\tz,y\t4\nnil\nfalse\tmaqet.json.decode: opts must be a table")
    }
}
