import CLuaShim
import Foundation
import MaqetCore

/// `maqet.log`: one line per message on stderr, `maqet: <level>: <message>`, filtered by the
/// verbosity of the command line (-q errors only; default warnings and errors; -v adds info;
/// -vv adds debug).
enum LogModule {
    static let functions: [LuaRegistration] = [
        ("debug", debug),
        ("info", info),
        ("warn", warn),
        ("error", error),
    ]

    enum Level: Int {
        case error = -1, warning = 0, info = 1, debug = 2

        var label: String {
            switch self {
            case .error: return "error"
            case .warning: return "warning"
            case .info: return "info"
            case .debug: return "debug"
            }
        }
    }

    /// Writes `message` when `verbosity` lets `level` through. Each line of a multi-line message
    /// gets the prefix, so every stderr line says where it came from.
    static func write(_ level: Level, _ message: String, verbosity: Int) {
        MaqetLog.appendToFile(level.label, message)
        guard level.rawValue <= verbosity else { return }
        var text = ""
        for line in message.split(separator: "\n", omittingEmptySubsequences: false) {
            text += "maqet: \(level.label): \(line)\n"
        }
        var bytes = Array(text.utf8) // fwrite, not fputs: a NUL in the message must not cut it
        fwrite(&bytes, 1, bytes.count, stderr)
    }

    static func log(_ L: OpaquePointer?, _ level: Level, _ name: String) -> Int32 {
        Lua.call(L) { lua in
            guard let message = lua.stringOrNumber(at: 1) else {
                throw LuaUsageError("maqet.log.\(name): message must be a string or a number, got \(lua.typeName(at: 1))")
            }
            write(level, message, verbosity: Runtime.from(lua).verbosity)
            return 0
        }
    }

    private static let debug: LuaFunction = { L in log(L, .debug, "debug") }
    private static let info: LuaFunction = { L in log(L, .info, "info") }
    private static let warn: LuaFunction = { L in log(L, .warning, "warn") }
    private static let error: LuaFunction = { L in log(L, .error, "error") }
}

/// maqet's log lines in a file besides stderr (`--log-file PATH`, `logging.log_file` in
/// maqet.conf): every maqet.log line of any level, the command's notices and its error line, as
/// `<UTC timestamp> maqet[<pid>] <level>: <message>`, appended (the file is 0600).
public enum MaqetLog {
    /// The file, when the command was given one.
    nonisolated(unsafe) public static var filePath: String?

    /// Appends one line per line of `message` to the log file, when there is one.
    public static func appendToFile(_ level: String, _ message: String) {
        guard let path = filePath else { return }
        let head = "\(utcTimestamp()) maqet[\(getpid())] \(level): "
        var text = ""
        for line in message.split(separator: "\n", omittingEmptySubsequences: false) { text += head + line + "\n" }
        LogFile.append(path, Array(text.utf8))
    }
}
