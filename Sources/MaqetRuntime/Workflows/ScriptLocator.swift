import Foundation

/// Finds maqet's own Lua scripts (workflows under `scripts/lifecycle/`, libraries under
/// `scripts/lib/`). A user overrides one by putting an edited copy, under the same relative name,
/// in the first of these that has it:
/// 1. `--scripts-dir DIR` (or `$MAQET_SCRIPTS_DIR`),
/// 2. `<config dir>/scripts`: the config dir is `$MAQET_CONFIG_DIR` (`--maqet-config-dir`,
///    maqet.conf's `directories.config_dir`), else `$XDG_CONFIG_HOME/maqet` (else `~/.config/maqet`),
/// 3. the copies built into the binary.
public struct ScriptLocator: Sendable {
    public enum Origin: String, Sendable {
        case scriptsDir = "scripts-dir"
        case userConfig = "user"
        case builtIn = "built-in"
    }

    /// One script, resolved.
    public struct Script: Sendable {
        /// Relative name, e.g. "lifecycle/start.lua".
        public let name: String
        public let origin: Origin
        /// The file read, for overrides; nil for a built-in copy.
        public let path: String?
        /// Chunk name for `load`: "@scripts/lifecycle/start.lua" for built-ins, "@<path>" for files,
        /// so errors point at the file a user would open.
        public var chunkName: String { "@" + (path ?? "scripts/" + name) }

        public func text() throws -> String {
            guard let path else { return EmbeddedFiles.all["scripts/" + name] ?? "" }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw MaqetError("cannot read \(path)", status: .notFound)
            }
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Override directories in search order.
    public let directories: [(path: String, origin: Origin)]

    public init(scriptsDirOption: String?, environment: [String: String] = ProcessInfo.processInfo.environment) {
        func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }
        var directories: [(String, Origin)] = []
        if let dir = nonEmpty(scriptsDirOption) ?? nonEmpty(environment["MAQET_SCRIPTS_DIR"]) {
            directories.append((dir, .scriptsDir))
        }
        directories.append(((Self.configDirectory(environment: environment) as NSString).appendingPathComponent("scripts"), .userConfig))
        self.directories = directories
    }

    /// maqet's config directory: `$MAQET_CONFIG_DIR`, else `$XDG_CONFIG_HOME/maqet`, else
    /// `~/.config/maqet` (the one owner of that path).
    public static func configDirectory(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }
        if let own = nonEmpty(environment["MAQET_CONFIG_DIR"]) { return own }
        let config = nonEmpty(environment["XDG_CONFIG_HOME"])
            ?? ((nonEmpty(environment["HOME"]) ?? NSHomeDirectory()) as NSString).appendingPathComponent(".config")
        return (config as NSString).appendingPathComponent("maqet")
    }

    /// The copy of `name` ("lifecycle/start.lua") that maqet uses, or nil when there is none.
    public func find(_ name: String) -> Script? {
        for (directory, origin) in directories {
            let path = (directory as NSString).appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                return Script(name: name, origin: origin, path: path)
            }
        }
        if EmbeddedFiles.all["scripts/" + name] != nil {
            return Script(name: name, origin: .builtIn, path: nil)
        }
        return nil
    }

    /// Every script name maqet knows (built in, or only in an override directory), each resolved
    /// to the copy that is used.
    public func all() -> [Script] {
        var names = Set(EmbeddedFiles.files(under: "scripts").map(\.name))
        for (directory, _) in directories {
            guard let walker = FileManager.default.enumerator(atPath: directory) else { continue }
            for case let relative as String in walker where relative.hasSuffix(".lua") {
                names.insert(relative)
            }
        }
        return names.sorted().compactMap(find)
    }
}
