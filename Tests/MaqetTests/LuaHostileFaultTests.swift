import Foundation
import XCTest

/// Hostile scripts (issue 9, docs/reliability.md "Hostile scripts"): every function and method the
/// host registers (LuaSurface, the walk StubsTests uses) is called with every kind of Lua value
/// in every argument position, by real `maqet run` processes. Pass: no process dies by a signal
/// or hangs, every call either returns or raises a Lua error (a string, or a maqet.error).
final class LuaHostileFaultTests: SandboxTestCase {
    /// The values, as Lua constructors: each call gets a fresh one (a call may close a handle).
    /// `D` is a scratch directory in the sandbox.
    static let values: [(name: String, make: String)] = [
        ("nil", "nil"),
        ("true", "true"),
        ("false", "false"),
        ("0", "0"),
        ("-1", "-1"),
        ("1", "1"),
        ("1.5", "1.5"),
        ("-0.0", "-0.0"),
        ("maxinteger", "math.maxinteger"),
        ("mininteger", "math.mininteger"),
        ("NaN", "0/0"),
        ("inf", "1/0"),
        ("-inf", "-1/0"),
        ("2^63", "2^63"),
        ("1e308", "1e308"),
        ("empty string", "''"),
        ("x", "'x'"),
        ("string with NUL", "'a\\0b'"),
        ("long string", "string.rep('x', 65536)"),
        ("/", "'/'"),
        ("-1 string", "'-1'"),
        ("SQL with NUL", "'SELECT 1\\0; DROP TABLE vm_instances'"),
        ("empty table", "{}"),
        ("array", "{1, 2, 3}"),
        ("record", "{a = 1, b = {}}"),
        ("cyclic table", "(function() local t = {} t.self = t t[1] = t return t end)()"),
        ("trap table", "setmetatable({}, {__index = function() error('trap: __index') end, __len = function() error('trap: __len') end, __pairs = function() error('trap: __pairs') end, __tostring = function() error('trap: __tostring') end})"),
        ("function", "function() return 1 end"),
        ("raising function", "function() error('raised by the argument') end"),
        ("coroutine", "coroutine.create(function() end)"),
        ("dead coroutine", "(function() local c = coroutine.create(function() end) coroutine.resume(c) return c end)()"),
        ("io.stdout", "io.stdout"),
        ("json.null", "maqet.json.null"),
        ("foreign light userdata", "select(2, debug.getupvalue(maqet.now, 1))"),
        ("db", "maqet.db_open(D .. '/fuzz.db')"),
        ("closed db", "(function() local d = maqet.db_open(D .. '/fuzz.db') d:close() return d end)()"),
        ("released db", "(function() local d = maqet.db_open(D .. '/fuzz.db') getmetatable(d).__gc(d) return d end)()"),
        ("maqet.db (lent)", "maqet.db"),
        ("rows", "(select(2, maqet.db_open(D .. '/fuzz.db'):rows('SELECT 1 AS one')))"),
        ("closed rows", "(function() local _, r = maqet.db_open(D .. '/fuzz.db'):rows('SELECT 1') r:close() return r end)()"),
        ("rows of a closed db", "(function() local d = maqet.db_open(D .. '/fuzz.db') local _, r = d:rows('SELECT 1') d:close() return r end)()"),
        ("process", "(function() local p = maqet.process.spawn({'/bin/true'}) p:wait(10000) return p end)()"),
        ("closed process", "(function() local p = maqet.process.spawn({'/bin/true'}) p:close() return p end)()"),
        ("regex", "maqet.regex.compile('a+')"),
        ("closed regex", "(function() local r = maqet.regex.compile('a') r:close() return r end)()"),
        ("forged maqet.database", "debug.setmetatable(io.tmpfile(), debug.getregistry()['maqet.database'])"),
        ("forged maqet.rows", "debug.setmetatable(io.tmpfile(), debug.getregistry()['maqet.rows'])"),
    ]

    /// Values a function that blocks for a number of milliseconds would wait on for good.
    static let endlessWaits: Set<String> = ["maxinteger", "inf", "2^63", "1e308"]
    /// Functions whose numbers are how long to block (bounded by the caller in real scripts):
    /// the values above are left out for them, and they take no part in the random combinations.
    static let blocking: Set<String> = ["function maqet.sleep", "function maqet.process.wait_pid"]

    /// Handle types whose methods get a valid `self` of their own (a qmp handle needs a QEMU).
    static let selfValue = ["maqet.database": "db", "maqet.rows": "rows", "maqet.process": "process", "maqet.regex": "regex"]

    static let positions = 4

    /// One call: a Lua expression for the function and the value indexes of its arguments.
    struct Call {
        var label: String
        var function: String
        var arguments: [Int]
    }

    func testEveryRegisteredFunctionWithEveryLuaType() throws {
        let sandbox = makeSandbox()
        let surface = LuaSurface.registered(in: sandbox)
        let functions = surface.filter { $0.hasPrefix("function ") }.sorted()
        let methods = surface.filter { $0.hasPrefix("method ") }.sorted()
        XCTAssertGreaterThan(functions.count, 30, "the walk found too few functions: \(functions)")
        XCTAssertGreaterThan(methods.count, 15, "the walk found too few methods: \(methods)")
        let handleTypes = Set(methods.map { String($0.dropFirst("method ".count).split(separator: ":")[0]) }).sorted()

        let indexOf = Dictionary(uniqueKeysWithValues: Self.values.enumerated().map { ($1.name, $0) })
        let valueNames = Self.values.map(\.name)
        var calls: [Call] = []

        func matrix(_ label: String, _ function: String, blocking: Bool, fixedSelf: Int? = nil) {
            calls.append(Call(label: "\(label)()", function: function, arguments: fixedSelf.map { [$0] } ?? []))
            let first = fixedSelf == nil ? 0 : 1
            for position in first..<Self.positions {
                for (v, name) in valueNames.enumerated() where !(blocking && Self.endlessWaits.contains(name)) {
                    var arguments = Array(repeating: indexOf["nil"]!, count: position + 1)
                    if let fixedSelf { arguments[0] = fixedSelf }
                    arguments[position] = v
                    calls.append(Call(label: "\(label)(#\(position + 1)=\(name))", function: function, arguments: arguments))
                }
            }
        }

        for entry in functions {
            let path = String(entry.dropFirst("function ".count))
            matrix(path, path, blocking: Self.blocking.contains(entry))
        }
        for entry in methods {
            let parts = entry.dropFirst("method ".count).split(separator: ":").map(String.init)
            let function = "debug.getregistry()['\(parts[0])'].__index.\(parts[1])"
            let label = "\(parts[0]):\(parts[1])"
            matrix(label, function, blocking: false) // any value as self
            if let own = Self.selfValue[parts[0]] {
                matrix(label, function, blocking: false, fixedSelf: indexOf[own]!)
            }
        }
        for type in handleTypes {
            for metamethod in ["__gc", "__close", "__tostring"] {
                matrix("\(type).\(metamethod)", "debug.getregistry()['\(type)'].\(metamethod)", blocking: false)
            }
        }

        let matrixCount = calls.count

        // Random combinations: every position a random value, reproducible from the seed.
        let trials = Campaign.trials(ci: 10, campaign: 400)
        let seed = UInt64(ProcessInfo.processInfo.environment["MAQET_FUZZ_SEED"] ?? "") ?? UInt64(time(nil))
        var random = SplitMix64(seed: seed)
        let callable = functions.filter { !Self.blocking.contains($0) }.map { String($0.dropFirst("function ".count)) }
            + methods.map { entry -> String in
                let parts = entry.dropFirst("method ".count).split(separator: ":").map(String.init)
                return "debug.getregistry()['\(parts[0])'].__index.\(parts[1])"
            }
        for function in callable {
            for trial in 0..<trials {
                let count = Int(random.next() % UInt64(Self.positions + 1))
                let arguments = (0..<count).map { _ in Int(random.next() % UInt64(valueNames.count)) }
                calls.append(Call(label: "\(function)(\(arguments.map { valueNames[$0] }.joined(separator: ", "))) [seed \(seed) trial \(trial)]",
                                  function: function, arguments: arguments))
            }
        }

        // A few processes, so a crash names its call (the last line of its trace file).
        let batches = 4
        let perBatch = (calls.count + batches - 1) / batches
        let scratch = sandbox.root.file("scratch")
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        var total = 0
        for batch in 0..<batches {
            let slice = Array(calls[min(calls.count, batch * perBatch)..<min(calls.count, (batch + 1) * perBatch)])
            guard !slice.isEmpty else { continue }
            let trace = scratch + "/trace-\(batch)"
            let script = sandbox.write("fuzz-\(batch).lua", Self.script(slice, trace: trace))
            let result = runProcess("/usr/bin/timeout", ["-s", "KILL", "300", maqetBinary, "--maqet-data-dir", sandbox.dataDir,
                                                         "run", "--timeout", "240", script, scratch],
                                    environment: testEnvironment(home: sandbox.home), cwd: scratch)
            let lastCall = ((try? String(contentsOfFile: trace, encoding: .utf8)) ?? "").split(separator: "\n").last.map(String.init) ?? "(none)"
            XCTAssertEqual(result.code, 0, "batch \(batch) (seed \(seed)) ended with \(result.code) at the call: \(lastCall)\n--- stderr (end)\n\(result.stderr.suffix(3000))")
            let done = result.stdout.split(separator: "\n").last(where: { $0.hasPrefix("FUZZ DONE") }) ?? ""
            XCTAssertEqual(done, "FUZZ DONE calls=\(slice.count) odd=0", "batch \(batch) (seed \(seed)):\n\(result.stdout.suffix(3000))")
            total += slice.count
        }
        XCTAssertEqual(total, calls.count)
        print("LuaHostileFaultTests: \(calls.count) calls: \(matrixCount) in the matrix, \(trials) random combinations for each of \(callable.count) functions and methods (seed \(seed))")
    }

    /// The Lua program for `calls`: values made fresh per call, each call in pcall, its label
    /// written (unbuffered) to `trace` first; an error that is neither a string nor a maqet.error
    /// is reported as ODD.
    static func script(_ calls: [Call], trace: String) -> String {
        var lines: [String] = []
        lines.append("""
            local D = ...
            local trace = assert(io.open(\(luaQuoted(trace)), "w"))
            trace:setvbuf("no")
            local error_mt = debug.getregistry()["maqet.error"]
            local V = {}
            """)
        for (i, value) in values.enumerated() {
            lines.append("V[\(i + 1)] = function() return \(value.make) end")
        }
        lines.append("""
            local calls, odd = 0, 0
            local function probe(label, f, ...)
              trace:write(label, "\\n")
              calls = calls + 1
              if calls % 25 == 0 then collectgarbage() end
              if type(f) ~= "function" then
                odd = odd + 1
                print("ODD " .. label .. ": not a function")
                return
              end
              local ok, err = pcall(f, ...)
              if not ok and type(err) ~= "string" and not (type(err) == "table" and getmetatable(err) == error_mt) then
                odd = odd + 1
                print("ODD " .. label .. ": error object is a " .. type(err))
              end
            end
            """)
        for call in calls {
            let arguments = call.arguments.map { "V[\($0 + 1)]()" }
            lines.append("probe(\(luaQuoted(call.label)), \(call.function)\(arguments.isEmpty ? "" : ", " + arguments.joined(separator: ", ")))")
        }
        lines.append("""
            trace:write("end\\n")
            print(string.format("FUZZ DONE calls=%d odd=%d", calls, odd))
            """)
        return lines.joined(separator: "\n") + "\n"
    }

    static func luaQuoted(_ text: String) -> String {
        "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}

/// A small seeded generator (SplitMix64), so a failing random combination can be replayed with
/// MAQET_FUZZ_SEED.
extension LuaHostileFaultTests {
    struct SplitMix64 {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }
}
