-- Historical step kept so version numbers match the published Python maqet: it stored a
-- socket-authentication secret in the database. 0004 removes it again.
return {
    description = "Add auth_secret column (removed again by 0004)",
    up = function(db)
        if not db:has_column("vm_instances", "auth_secret") then
            db:exec("ALTER TABLE vm_instances ADD COLUMN auth_secret TEXT")
        end
    end,
}
