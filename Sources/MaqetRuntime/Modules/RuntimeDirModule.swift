import CLuaShim
import Foundation
import MaqetCore

/// `maqet.runtime_dir([vm_id])`, directly on `maqet`: where sockets and runtime files live.
enum RuntimeDirModule {
    static let functions: [LuaRegistration] = [
        ("runtime_dir", runtimeDir),
    ]

    /// `maqet.runtime_dir()` → the runtime directory (`$XDG_RUNTIME_DIR/maqet`, else
    /// `/tmp/maqet-<uid>`), created 0700; `maqet.runtime_dir(vm_id)` → that VM's subdirectory
    /// (`<runtime>/<first 12 characters of vm_id>`), created 0700. `nil, message, code` when the
    /// directory cannot be created or belongs to someone else.
    private static let runtimeDir: LuaFunction = { L in
        Lua.call(L) { lua in
            let vmID = try lua.optString(1, "maqet.runtime_dir", "vm_id")
            if let vmID, vmID.isEmpty { throw LuaUsageError("maqet.runtime_dir: vm_id must be a non-empty string") }
            do {
                if let vmID {
                    lua.push(try RuntimeDirectory.ensureVMDirectory(vmID: vmID))
                } else {
                    lua.push(try RuntimeDirectory.ensure())
                }
                return 1
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
        }
    }
}
