/// \file
/// \brief `awq::backend::type_tag<T>`: a value standing for the type T, for the callbacks through
///        which a backend says in which type it keeps something (backend::cuda::with_activation).
#pragma once

namespace awq::backend {

/// \brief Stands for the type T (T itself need not be constructible on the host).
template <class T>
struct type_tag {
  using type = T;  ///< T
};

}  // namespace awq::backend
