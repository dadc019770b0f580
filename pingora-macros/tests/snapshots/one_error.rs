::core::compile_error! {
    "weight 0 would send this peer nothing: use a weight from 1 to 256, or remove the peer"
}
