/// An operator request that cannot run now; the routes answer it with 409 Conflict.
struct OperatorConflict: Error, CustomStringConvertible {
    var description: String
}
