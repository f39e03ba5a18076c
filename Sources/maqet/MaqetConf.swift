import Foundation
import MaqetCore
import MaqetRuntime
import Yams

/// `maqet.conf`: the published maqet's runtime settings file (YAML), read once per command.
///
/// The first file found is used: `$MAQET_CONFIG`, `<--maqet-config-dir>/maqet.conf`,
/// `./maqet.conf`, `./.maqet.conf`, `<config dir>/maqet.conf` (`$MAQET_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/maqet`, else `~/.config/maqet`), `/etc/maqet/maqet.conf`.
///
/// Keys with a meaning here: `directories.data_dir`, `directories.runtime_dir`,
/// `directories.config_dir`, `logging.verbosity` (0-3, the published maqet's scale: 1 is
/// maqet's default, 0 errors only, 2 `-v`, 3 `-vv`; `-v` adds to it) and `logging.log_file`.
/// Any other key gets a warning naming it and the file. A flag (or the variable behind it) beats
/// the file. Paths expand a leading `~` and resolve relative to the file's directory. A file
/// that is not YAML, or a key with a value of the wrong type, is an error (exit 64) that names the
/// file and says what to fix, and the command does nothing.
struct MaqetConf {
    var path: String
    var dataDir: String?
    var runtimeDir: String?
    var configDir: String?
    /// maqet's own scale (-1 errors only, 0 default, 1 info, 2 debug).
    var verbosity: Int?
    var logFile: String?
    var warnings: [String] = []

    /// The keys maqet honours, by section.
    static let known: [String: Set<String>] = [
        "directories": ["data_dir", "runtime_dir", "config_dir"],
        "logging": ["verbosity", "log_file"],
    ]

    /// The file to read, or nil when there is none.
    static func find(configDirOption: String?, environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }
        if let explicit = nonEmpty(environment["MAQET_CONFIG"]) { return explicit }
        var candidates: [String] = []
        if let dir = nonEmpty(configDirOption) { candidates.append((dir as NSString).appendingPathComponent("maqet.conf")) }
        candidates += ["maqet.conf", ".maqet.conf"]
        candidates.append((ScriptLocator.configDirectory(environment: environment) as NSString).appendingPathComponent("maqet.conf"))
        candidates.append("/etc/maqet/maqet.conf")
        return candidates.first { path in
            var info = stat()
            return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        }
    }

    /// Reads and checks `path`. Throws a `MaqetError` (usage) naming the file for anything it cannot use.
    static func load(_ path: String, home: String) throws -> MaqetConf {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw MaqetError("cannot read the settings file \(path) (\(String(cString: strerror(errno)))); fix its permissions, or point MAQET_CONFIG at another file", status: .usage)
        }
        let text = String(decoding: data, as: UTF8.self)
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw MaqetError("the settings file \(path) is not valid YAML (\(oneLine(error))); fix it, or point MAQET_CONFIG at another file", status: .usage)
        }
        var conf = MaqetConf(path: path)
        guard let document else { return conf } // an empty file: nothing set
        guard let top = document as? [String: Any] else {
            throw MaqetError("the settings file \(path) must be a mapping (directories:, logging:), not \(kind(document))", status: .usage)
        }
        let base = (absolute(path) as NSString).deletingLastPathComponent
        for section in top.keys.sorted() {
            guard let names = known[section] else {
                conf.warnings.append("\(path): '\(section)' has no meaning in maqet; ignored")
                continue
            }
            guard let values = top[section] as? [String: Any] else {
                if top[section] == nil || top[section] is NSNull { continue }
                throw MaqetError("\(path): '\(section)' must be a mapping, not \(kind(top[section]!))", status: .usage)
            }
            for key in values.keys.sorted() {
                let value = values[key]!
                guard names.contains(key) else {
                    conf.warnings.append("\(path): '\(section).\(key)' has no meaning in maqet; ignored")
                    continue
                }
                if value is NSNull { continue }
                if key == "verbosity" {
                    guard let level = value as? Int, (0...3).contains(level) else {
                        throw MaqetError("\(path): 'logging.verbosity' must be 0, 1, 2 or 3, not \(describe(value))", status: .usage)
                    }
                    conf.verbosity = level - 1
                    continue
                }
                guard let text = value as? String, !text.isEmpty else {
                    throw MaqetError("\(path): '\(section).\(key)' must be a path, not \(describe(value))", status: .usage)
                }
                let resolved = resolve(text, base: base, home: home)
                switch key {
                case "data_dir": conf.dataDir = resolved
                case "runtime_dir": conf.runtimeDir = resolved
                case "config_dir": conf.configDir = resolved
                default: conf.logFile = resolved
                }
            }
        }
        return conf
    }

    /// `~` and `~/x` are the home directory; a relative path is relative to `base`.
    static func resolve(_ path: String, base: String, home: String) -> String {
        var path = path
        if path == "~" { path = home } else if path.hasPrefix("~/") { path = home + path.dropFirst(1) }
        if !path.hasPrefix("/") { path = (base as NSString).appendingPathComponent(path) }
        return URL(fileURLWithPath: path).standardizedFileURL.path
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(path)
    }

    private static func oneLine(_ error: Error) -> String {
        String(describing: error).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }

    private static func kind(_ value: Any) -> String {
        switch value {
        case is [Any]: return "a list"
        case is [String: Any]: return "a mapping"
        default: return describe(value)
        }
    }

    private static func describe(_ value: Any) -> String {
        if let s = value as? String { return "'\(s)'" }
        if value is [Any] { return "a list" }
        if value is [String: Any] { return "a mapping" }
        return String(describing: value)
    }
}
