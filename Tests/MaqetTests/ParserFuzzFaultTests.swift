import Foundation
@testable import MaqetCore
import XCTest

/// A seeded, repeatable PRNG (SplitMix64) for the fuzz harness: the seed is printed at the start
/// of every test and in every failure, and `MAQET_FUZZ_SEED=N` replays a run.
struct FuzzRandom {
    private(set) var state: UInt64

    init(seed: UInt64) { state = seed }

    /// The seed of this run: $MAQET_FUZZ_SEED, else a fresh random one.
    static func seed(for test: String) -> UInt64 {
        let seed = ProcessInfo.processInfo.environment["MAQET_FUZZ_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64.max)
        print("\(test): fuzz seed \(seed) (replay with MAQET_FUZZ_SEED=\(seed))")
        return seed
    }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 0 ..< n (n > 0).
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }

    mutating func chance(_ percent: Int) -> Bool { below(100) < percent }

    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }
}

/// Hostile input for the three parsers maqet takes from outside: the JSON decoder
/// (MaqetCore/JSON.swift, also `maqet.json.decode`), the QMP reader (MaqetCore/QMP.swift, fed by a
/// misbehaving peer on a real Unix socket) and the YAML config loader (`maqet.yaml`, `config.lua`,
/// through the real binary). Pass: no crash, no hang (every run bounded), and every failure is an
/// error value with a message, never anything else. Counts from Campaign (small in CI).
final class ParserFuzzFaultTests: XCTestCase {
    // MARK: mutations

    /// Fragments that tend to break parsers: structure, escapes, numbers, bad UTF-8.
    static let tokens: [[UInt8]] = [
        "[", "]", "{", "}", ":", ",", "\"", "\\", "\\u", "\\ud800", "\\udc00", "\\ud83d\\ude00", "\\u0000",
        "1e999999", "-", "-0", "0.", ".5", "1e", "123456789012345678901234567890", "true", "nul", "NaN",
        "&a ", "*a", "<<: ", "- ", "? ", "!!binary ", "!tag ", "%YAML 1.2\n", "---\n", "...\n", "\t", "\n", "\r\n", "#",
        "'", "|\n", ">-\n", "~",
    ].map { Array($0.utf8) } + [[0x00], [0xFF], [0xC0, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]]

    /// One random change to `input`: a byte flipped, inserted or removed, a range cut,
    /// duplicated or truncated, or a token spliced in.
    static func mutate(_ input: [UInt8], _ random: inout FuzzRandom) -> [UInt8] {
        var out = input
        let position = out.isEmpty ? 0 : random.below(out.count + 1)
        switch random.below(7) {
        case 0 where !out.isEmpty:
            out[min(position, out.count - 1)] ^= UInt8(1 << random.below(8))
        case 1:
            out.insert(UInt8(random.below(256)), at: position)
        case 2 where !out.isEmpty:
            let end = min(out.count, position + 1 + random.below(16))
            out.removeSubrange(min(position, out.count - 1)..<end)
        case 3 where !out.isEmpty:
            let start = random.below(out.count)
            let end = min(out.count, start + 1 + random.below(64))
            out.insert(contentsOf: out[start..<end], at: position)
        case 4:
            out = Array(out.prefix(position))
        default:
            out.insert(contentsOf: random.pick(tokens), at: position)
        }
        return out
    }

    /// `input` after 1 to 8 mutations, capped at 256 KiB.
    static func mutated(_ input: [UInt8], _ random: inout FuzzRandom) -> [UInt8] {
        var out = input
        for _ in 0...random.below(8) { out = mutate(out, &random) }
        return Array(out.prefix(256 << 10))
    }

    /// A random JSON value (as text) of QMP's and maqet's shapes, sometimes odd: deep, big, wrong types.
    static func randomJSON(_ random: inout FuzzRandom, depth: Int = 0) -> String {
        let keys = ["return", "error", "id", "event", "data", "timestamp", "seconds", "microseconds", "class", "desc", "QMP", "version", "capabilities", "status", "running", ""]
        switch random.below(depth > 4 ? 6 : 9) {
        case 0: return "null"
        case 1: return random.chance(50) ? "true" : "false"
        case 2: return String(Int64(bitPattern: random.next()) >> random.below(64))
        case 3: return random.pick(["1.5", "-0.0", "1e308", "1e-400", "4.9e-324", "18446744073709551616", "-9223372036854775809"])
        case 4: return "\"" + random.pick(["", "x", "\\u00e9", "\\ud800", "\\n\\t", "query-status", String(repeating: "a", count: random.below(5000))]) + "\""
        case 5: return "\"\(random.pick(keys))\""
        case 6, 7:
            let n = random.below(5)
            let members = (0..<n).map { _ in "\"\(random.pick(keys))\": \(randomJSON(&random, depth: depth + 1))" }
            return "{" + members.joined(separator: ", ") + "}"
        default:
            let n = random.below(5)
            return "[" + (0..<n).map { _ in randomJSON(&random, depth: depth + 1) }.joined(separator: ", ") + "]"
        }
    }

    /// Fixed hostile inputs every run has: deep nesting, huge numbers, bad UTF-8, lone surrogates.
    static let hostileJSON: [[UInt8]] = [
        Array((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8),
        Array((String(repeating: "{\"a\":", count: 100_000) + "1" + String(repeating: "}", count: 100_000)).utf8),
        Array(String(repeating: "[", count: 100_000).utf8),
        Array(("1" + String(repeating: "0", count: 1_000_000)).utf8),
        Array(("0." + String(repeating: "0", count: 1_000_000) + "1").utf8),
        Array("1e99999999999999999999".utf8), Array("-1e-99999999999999999999".utf8),
        Array("\"\\ud800\"".utf8), Array("\"\\udc00\\ud800\"".utf8), Array("\"\\ud800\\u0041\"".utf8),
        [0x22, 0xFF, 0x22], [0x22, 0xC0, 0x80, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xF8, 0x88, 0x80, 0x80, 0x80, 0x22],
        [0xEF, 0xBB, 0xBF, 0x7B, 0x7D], [0x7B, 0x00, 0x7D], [], Array("   ".utf8),
        Array(("\"" + String(repeating: "\\u0000", count: 100_000) + "\"").utf8),
    ]

    static let seedJSON: [String] = [
        FakeQMPPeer.greeting,
        #"{"return": {"status": "running", "singlestep": false, "running": true}, "id": 1}"#,
        #"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1700000000, "microseconds": 12}}"#,
        #"{"error": {"class": "GenericError", "desc": "no such device \u00e9"}, "id": "x"}"#,
        #"{"arguments": [{"machine": "q35"}, {"accel": "kvm"}], "binary": "qemu-system-x86_64", "cpu": 1, "memory": "64M", "storage": [{"name": "hdd", "size": "16M"}], "n": -1.5e-3}"#,
    ]

    /// Checks one JSON input: parse returns a value that re-encodes and parses back equal (or the
    /// encoder refuses it with its own error: infinity), or throws JSONSyntaxError. Anything else fails.
    func checkJSON(_ input: [UInt8], _ label: String) {
        do {
            let value = try JSONValue.parse(bytes: input)
            do {
                let text = try value.serialized()
                XCTAssertEqual(try? JSONValue.parse(text), value, "\(label): re-encoded \(text.prefix(200)) parses differently")
            } catch is JSONEncodingError {
                // a value JSON text cannot carry (a number that overflowed to infinity)
            } catch {
                XCTFail("\(label): serialized() threw \(error)")
            }
        } catch let error as JSONSyntaxError {
            XCTAssertFalse(error.message.isEmpty, label)
            XCTAssertGreaterThan(error.line, 0, label)
        } catch {
            XCTFail("\(label): parse threw \(type(of: error)), not a JSONSyntaxError: \(error)")
        }
    }

    // MARK: JSON decoder

    func testJSONDecoderTakesMutatedAndHostileInput() {
        let seed = FuzzRandom.seed(for: name)
        var random = FuzzRandom(seed: seed)
        for (i, input) in Self.hostileJSON.enumerated() { checkJSON(input, "hostile #\(i) (seed \(seed))") }
        let trials = Campaign.trials(ci: 20_000, campaign: 1_000_000)
        for trial in 0..<trials {
            let base = random.chance(30) ? Self.randomJSON(&random) : random.pick(Self.seedJSON)
            let input = Self.mutated(Array(base.utf8), &random)
            checkJSON(input, "trial \(trial) (seed \(seed)): \(String(decoding: input.prefix(120), as: UTF8.self).debugDescription)")
        }
    }

    // MARK: QMP reader

    /// What a misbehaving peer does after its greeting, one per trial.
    enum PeerMove: CaseIterable { case mutatedReply, randomReply, garbageBytes, hugeLine, eventFlood, silentClose, noNewline }

    func testQMPReaderTakesAHostilePeer() throws {
        let seed = FuzzRandom.seed(for: name)
        var random = FuzzRandom(seed: seed)
        let trials = Campaign.trials(ci: 30, campaign: 600)
        var outcomes: [String: Int] = [:]
        for trial in 0..<trials {
            // Every move comes up in CI; the 65 MiB line only once per run (it costs memory, not logic).
            let move = trial < PeerMove.allCases.count ? PeerMove.allCases[trial] : random.pick(PeerMove.allCases.filter { $0 != .hugeLine })
            var greeting = Array(FakeQMPPeer.greeting.utf8)
            if trial >= PeerMove.allCases.count && random.chance(25) {
                greeting = Self.mutated(greeting, &random)
                if random.chance(50) { greeting += Array("\r\n".utf8) }
            }
            var scripted: [[UInt8]] = []
            switch move {
            case .mutatedReply:
                for _ in 0..<(1 + random.below(3)) {
                    scripted.append(Self.mutated(Array(random.pick(Self.seedJSON).utf8), &random) + Array("\r\n".utf8))
                }
            case .randomReply:
                for _ in 0..<(1 + random.below(4)) { scripted.append(Array((Self.randomJSON(&random) + "\r\n").utf8)) }
            case .garbageBytes:
                scripted.append((0..<(1 + random.below(4096))).map { _ in UInt8(random.below(256)) })
            case .hugeLine:
                scripted.append(Array("{\"event\": \"BIG\", \"data\": \"".utf8) + [UInt8](repeating: 0x78, count: (64 << 20) + 16))
            case .eventFlood:
                let event = Array("{\"event\": \"X\", \"data\": {}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n".utf8)
                scripted.append(Array([[UInt8]](repeating: event, count: 2_000 + random.below(3_000)).joined()))
            case .silentClose:
                break
            case .noNewline:
                scripted.append(Array("{\"return\": {}, \"id\": ".utf8))
            }
            let greet = greeting
            let lines = scripted
            // Mostly the capabilities handshake goes right and the moves answer the command
            // after it; sometimes they answer qmp_capabilities itself.
            let duringHandshake = trial >= PeerMove.allCases.count && random.chance(25)
            let peer = FakeQMPPeer()
            peer.serve { fd in
                FakeQMPPeer.write(fd, String(decoding: greet, as: UTF8.self))
                guard let capabilities = FakeQMPPeer.readLine(fd) else { return }
                if !duringHandshake {
                    FakeQMPPeer.write(fd, "{\"return\": {}, \"id\": \(FakeQMPPeer.id(of: capabilities))}\r\n")
                    _ = FakeQMPPeer.readLine(fd)
                }
                // Then the scripted bytes, and hang up.
                for bytes in lines {
                    var offset = 0
                    while offset < bytes.count {
                        let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                        if n <= 0 { break }
                        offset += n
                    }
                }
                shutdown(fd, Int32(SHUT_WR))
                while FakeQMPPeer.readLine(fd) != nil {}
            }
            var outcome: String
            let t0 = Date()
            do {
                // Short timeouts: a peer that waits for a line the client never sends (a greeting
                // without its newline) costs this much, and nothing else waits.
                let client = try QMPClient(path: peer.path, timeoutMs: 500)
                do {
                    _ = try client.execute("query-status", timeoutMs: 500)
                    outcome = "reply"
                } catch let error as QMPError {
                    XCTAssertFalse(error.description.isEmpty, "trial \(trial) (seed \(seed))")
                    outcome = error.codeName
                }
                _ = try? client.drainEvents()
                client.close()
            } catch let error as QMPError {
                XCTAssertFalse(error.description.isEmpty, "trial \(trial) (seed \(seed))")
                outcome = "connect " + error.codeName
            } catch {
                XCTFail("trial \(trial) (seed \(seed)), \(move): not a QMPError: \(type(of: error)) \(error)")
                outcome = "other"
            }
            peer.finish()
            if ProcessInfo.processInfo.environment["MAQET_FUZZ_VERBOSE"] == "1" { print("trial \(trial) \(move) \(outcome) \(Date().timeIntervalSince(t0))") }
            outcomes[outcome, default: 0] += 1
        }
        print("\(name): QMP outcomes \(outcomes.sorted { $0.key < $1.key })")
        // The moves that cannot be answered must have failed as errors, not as replies.
        XCTAssertGreaterThan(outcomes.filter { $0.key != "reply" }.values.reduce(0, +), 0)
    }

    // MARK: YAML loader (through the real binary)

    /// Hostile YAML every run has: deep nesting of each kind, alias bombs, huge scalars, bad UTF-8.
    static func hostileYAML() -> [[UInt8]] {
        var laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        var previous = "a"
        for letter in "bcdefghij" {
            laughs += "\(letter): &\(letter) [" + Array(repeating: "*\(previous)", count: 10).joined(separator: ", ") + "]\n"
            previous = String(letter)
        }
        var mapLaughs = "a: &a {k: v}\n"
        previous = "a"
        for letter in "bcdefghijklmnopqrstuvwxyz" {
            mapLaughs += "\(letter): &\(letter) {x: *\(previous), y: *\(previous)}\n"
            previous = String(letter)
        }
        // Each bomb costs about 2 s of CPU before the million-value limit stops it: the mapping
        // bomb (same limit, other code path) runs in the campaign only.
        let texts = [
            laughs, Campaign.isLong ? mapLaughs : "a: &a {k: v}\nb: {x: *a, y: *a}\n",
            String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000),
            String(repeating: "{a: ", count: 100_000) + "1" + String(repeating: "}", count: 100_000),
            String(repeating: "- ", count: 100_000) + "x\n",
            (0..<3_000).map { String(repeating: " ", count: $0) + "k\($0):\n" }.joined(),
            "a: &a [*a]\n", "a: *nothing\n", "<<: *nothing\n", "a: &x 1\nb: &x 2\nc: *x\n",
            "memory: " + String(repeating: "9", count: 100_000) + "\n",
            "name: \"" + String(repeating: "\\ud800", count: 10) + "\"\n",
            "arguments:\n" + String(repeating: "  - drive: \"file=/etc/shadow\"\n", count: 10_000),
            "storage: !!binary aGVsbG8=\n", "? [a, b]\n: c\n", "a: 1\na: 2\n", "%YAML 9.9\n---\na: 1\n", "--- a\n--- b\n",
        ]
        return texts.map { Array($0.utf8) } + [[0xFF, 0xFE, 0x00, 0x61], [0x61, 0x3A, 0x20, 0xC0, 0x80], [0x61, 0x3A, 0x00, 0x0A]]
    }

    func testYAMLLoaderTakesMutatedAndHostileConfigs() throws {
        let seed = FuzzRandom.seed(for: name)
        var random = FuzzRandom(seed: seed)
        let sandbox = Sandbox()
        let corpusDir = fixturePath("configs")
        var corpus: [[UInt8]] = []
        let files = FileManager.default.enumerator(atPath: corpusDir)?.compactMap { $0 as? String }.filter { $0.hasSuffix(".yaml") }.sorted() ?? []
        for file in files {
            if let data = FileManager.default.contents(atPath: (corpusDir as NSString).appendingPathComponent(file)) { corpus.append(Array(data)) }
        }
        XCTAssertGreaterThan(corpus.count, 2, "no YAML corpus in \(corpusDir)")
        var inputs = Self.hostileYAML()
        inputs.append([UInt8](repeating: 0x23, count: (16 << 20) + 1)) // over the loader's 16 MiB limit
        let trials = Campaign.trials(ci: 400, campaign: 20_000)
        for _ in 0..<trials { inputs.append(Self.mutated(random.pick(corpus), &random)) }
        let dir = sandbox.root.file("cases")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (i, bytes) in inputs.enumerated() {
            FileManager.default.createFile(atPath: "\(dir)/\(i + 1).yaml", contents: Data(bytes))
        }
        // One run of the real binary for all cases: the YAML module, then config.lua's loader and
        // validator on what loads, then maqet.json.decode of the same bytes. Each case prints one
        // line, so a crash names the case it died in (the last one printed + 1).
        let script = """
            local config = require("maqet.lib.config")
            -- The binary's -version probe is not a parser: keep the name check, skip the run.
            local qemu = require("maqet.lib.qemu")
            local binary_problem = qemu.binary_problem
            qemu.binary_problem = function(cfg, program) return binary_problem(cfg, program, false) end
            local dir, n = arg[1], tonumber(arg[2])
            local function one_line(s) return type(s) == "string" and s ~= "" and not s:find("\\n", 1, true) end
            for i = 1, n do
                local path = dir .. "/" .. i .. ".yaml"
                local value, message, code = maqet.yaml.load_file(path)
                local verdict
                if value == nil then
                    verdict = (one_line(message) and type(code) == "string") and ("error " .. code) or ("BAD yaml error " .. tostring(message))
                else
                    local ok, err = pcall(function() return config.validate(config.load_files({ path })) end)
                    if ok then verdict = "valid"
                    else
                        local text = type(err) == "table" and tostring(err.message or err[1]) or tostring(err)
                        verdict = (type(err) == "table" or one_line(text)) and "refused" or ("BAD refusal " .. text)
                    end
                end
                local f = assert(io.open(path, "rb")); local bytes = f:read("a"); f:close()
                local j, jmessage, jcode = maqet.json.decode(bytes)
                if j == nil and not (one_line(jmessage) and jcode == "EJSON") then verdict = verdict .. " BAD json " .. tostring(jmessage) end
                print(i .. " " .. verdict)
            end
            -- And the other way: a Lua table nested 100 000 deep is refused by the encoder.
            local deep = {}
            local cur = deep
            for _ = 1, 100000 do local t = {}; cur[1] = t; cur = t end
            local ok, encoded = pcall(maqet.json.encode, deep)
            print((ok and type(encoded) == "string") and "deep encode BAD" or "deep encode refused")
            print("done")
            """
        let result = sandbox.runScript(script, name: "fuzz.lua", options: ["--timeout", "600"], args: [dir, String(inputs.count)])
        let lines = result.stdout.split(separator: "\n").map(String.init)
        let last = lines.last(where: { $0.first?.isNumber == true }).flatMap { Int($0.split(separator: " ")[0]) } ?? 0
        XCTAssertEqual(result.code, 0, "seed \(seed): maqet run exited \(result.code) after case \(last) of \(inputs.count) (\(dir)/\(last + 1).yaml)\n\(result.stderr.suffix(2000))")
        XCTAssertEqual(lines.last, "done", "seed \(seed): stopped after case \(last)")
        let bad = lines.filter { $0.contains("BAD") }
        XCTAssertEqual(bad, [], "seed \(seed)")
        var verdicts: [String: Int] = [:]
        XCTAssertTrue(lines.contains("deep encode refused"), "seed \(seed)")
        for line in lines.dropLast(2) { verdicts[line.split(separator: " ").dropFirst().joined(separator: " "), default: 0] += 1 }
        print("\(name): YAML verdicts \(verdicts.sorted { $0.key < $1.key })")
        XCTAssertEqual(lines.count, inputs.count + 2)
        // The hostile cases are refused, not loaded: the bombs and the deep nests are errors.
        for i in Campaign.isLong ? [1, 2, 3, 4, 5] : [1, 3, 4, 5] {
            XCTAssertTrue(lines.indices.contains(i - 1) && lines[i - 1].hasPrefix("\(i) error EYAML"), "hostile case \(i): \(lines.indices.contains(i - 1) ? lines[i - 1] : "missing")")
        }

        // A few through `maqet add` itself: a documented exit code, one line, nothing else.
        for i in 0..<min(inputs.count, Campaign.trials(ci: 6, campaign: 100)) {
            let index = i < 4 ? i + 1 : inputs.count - i
            let added = sandbox.maqet(["add", "\(dir)/\(index).yaml", "--name", "f\(i)"], cwd: sandbox.home)
            XCTAssertTrue([0, 64].contains(added.code), "seed \(seed), case \(index): exit \(added.code)\n\(added.stderr)")
            if added.code != 0 {
                // Warnings (an unknown key) may come first; the refusal is one line, the last.
                let lines = added.stderr.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
                XCTAssertTrue(added.stderr.hasSuffix("\n") && lines.allSatisfy { $0.hasPrefix("maqet: ") }
                              && lines.dropLast().allSatisfy { $0.hasPrefix("maqet: warning: ") }, "case \(index): \(added.stderr)")
            }
        }
    }
}
