import CLuaShim
import Foundation
import MaqetCore

/// `maqet.fs`: what Lua's `io` cannot tell about files (is it executable, what does a path really
/// point at, where is a program in PATH). Read-only: nothing here changes the file system.
enum FileSystemModule {
    static let functions: [LuaRegistration] = [
        ("stat", stat_),
        ("realpath", realpath_),
        ("which", which),
        ("cwd", cwd),
        ("list", list),
        ("space", space),
    ]

    /// `maqet.fs.stat(path)`: `{type = "file"|"directory"|"link"|"socket"|"fifo"|"device",
    /// size = bytes, mode = permission bits, executable = bool, readable = bool}` (symlinks
    /// followed), or `nil, "maqet.fs.stat PATH: reason", "ENOENT"`. The corresponding C functions
    /// are `stat` and `access`.
    private static let stat_: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lua.checkPath(1, "maqet.fs.stat", "path")
            var info = stat()
            guard stat(path, &info) == 0 else {
                let code = errno
                return lua.fail("maqet.fs.stat \(path): \(String(cString: strerror(code)))", code: errnoName(code))
            }
            let type: String
            switch info.st_mode & S_IFMT {
            case S_IFREG: type = "file"
            case S_IFDIR: type = "directory"
            case S_IFLNK: type = "link"
            case S_IFSOCK: type = "socket"
            case S_IFIFO: type = "fifo"
            default: type = "device"
            }
            lua.newTable(recordCount: 5)
            lua.push(type)
            lua.setRawField(-2, "type")
            lua.push(Int64(info.st_size))
            lua.setRawField(-2, "size")
            lua.push(Int64(info.st_mode & 0o7777))
            lua.setRawField(-2, "mode")
            lua.push(access(path, X_OK) == 0)
            lua.setRawField(-2, "executable")
            lua.push(access(path, R_OK) == 0)
            lua.setRawField(-2, "readable")
            return 1
        }
    }

    /// `maqet.fs.realpath(path)`: the absolute path with `.`, `..` and symlinks resolved. The part
    /// that does not exist yet is appended as written (normalised), so a disk that is still to be
    /// created resolves too. Relative paths are taken from the current directory.
    private static let realpath_: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lua.checkPath(1, "maqet.fs.realpath", "path")
            guard !path.isEmpty else { throw LuaUsageError("maqet.fs.realpath: path must not be empty") }
            lua.push(resolve(path))
            return 1
        }
    }

    static func resolve(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var components: [String] = []
        for part in absolute.split(separator: "/") {
            switch part {
            case ".": continue
            case "..": if !components.isEmpty { components.removeLast() }
            default: components.append(String(part))
            }
        }
        // The longest prefix that exists goes through realpath(3); the rest is appended.
        var existing = components.count
        while existing > 0 {
            let prefix = "/" + components[0..<existing].joined(separator: "/")
            if let real = realpath(prefix, nil) {
                defer { free(real) }
                let rest = components[existing...]
                let head = String(cString: real)
                return rest.isEmpty ? head : (head == "/" ? "" : head) + "/" + rest.joined(separator: "/")
            }
            existing -= 1
        }
        return "/" + components.joined(separator: "/")
    }

    /// `maqet.fs.which(name)`: the first executable regular file called `name` in `$PATH` (a
    /// name containing `/` is checked as it is), or `nil, "maqet.fs.which: NAME not found in PATH", "ENOENT"`.
    private static let which: LuaFunction = { L in
        Lua.call(L) { lua in
            let name = try lua.checkPath(1, "maqet.fs.which", "name")
            guard !name.isEmpty else { throw LuaUsageError("maqet.fs.which: name must not be empty") }
            func isExecutableFile(_ path: String) -> Bool {
                var info = stat()
                return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFREG && access(path, X_OK) == 0
            }
            if name.contains("/") {
                if isExecutableFile(name) { lua.push(name); return 1 }
                return lua.fail("maqet.fs.which: \(name) is not an executable file", code: access(name, F_OK) == 0 ? "EACCES" : "ENOENT")
            }
            let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
            for directory in path.split(separator: ":", omittingEmptySubsequences: false) {
                let candidate = (directory.isEmpty ? "." : String(directory)) + "/" + name
                if isExecutableFile(candidate) { lua.push(candidate); return 1 }
            }
            return lua.fail("maqet.fs.which: \(name) not found in PATH", code: "ENOENT")
        }
    }

    /// `maqet.fs.cwd()`: the current directory.
    private static let cwd: LuaFunction = { L in
        Lua.call(L) { lua in
            lua.push(FileManager.default.currentDirectoryPath)
            return 1
        }
    }
    /// `maqet.fs.list(dir)`: the names in a directory (without `.` and `..`), sorted, or
    /// `nil, "maqet.fs.list DIR: reason", "ENOENT"`. The corresponding C functions are
    /// `opendir` and `readdir`.
    private static let list: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lua.checkPath(1, "maqet.fs.list", "dir")
            guard let dir = opendir(path) else {
                let code = errno
                return lua.fail("maqet.fs.list \(path): \(String(cString: strerror(code)))", code: errnoName(code))
            }
            var names: [String] = []
            while let entry = readdir(dir) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                    String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
                }
                if name != "." && name != ".." { names.append(name) }
            }
            closedir(dir)
            names.sort()
            lua.newTable(arrayCount: Int32(clamping: names.count))
            for (i, name) in names.enumerated() {
                lua.push(name)
                lua.setRawIndex(-2, Int64(i + 1))
            }
            return 1
        }
    }

    /// `maqet.fs.space(path)`: `{free_bytes =, available_bytes =, total_bytes =}` of the file
    /// system holding `path` (available: what an unprivileged user may still write), or
    /// `nil, "maqet.fs.space PATH: reason", "ENOENT"`. The corresponding C function is `statvfs`.
    private static let space: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lua.checkPath(1, "maqet.fs.space", "path")
            var info = statvfs()
            guard statvfs(path, &info) == 0 else {
                let code = errno
                return lua.fail("maqet.fs.space \(path): \(String(cString: strerror(code)))", code: errnoName(code))
            }
            let unit = Int64(info.f_frsize)
            lua.newTable(recordCount: 3)
            lua.push(Int64(info.f_bfree) * unit)
            lua.setRawField(-2, "free_bytes")
            lua.push(Int64(info.f_bavail) * unit)
            lua.setRawField(-2, "available_bytes")
            lua.push(Int64(info.f_blocks) * unit)
            lua.setRawField(-2, "total_bytes")
            return 1
        }
    }
}
