/// \file
/// \brief Whether files can be mapped with mmap(2) here (`AWQ_HAVE_MMAP`), and the system headers
///        the readers need for it; shared by awq/io/mapped_file.hpp and awq/io/safetensors_header.hpp.
#pragma once

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
/// 1 where files are mapped with mmap(2) (POSIX); 0 where they are read with a seek and a read.
#define AWQ_HAVE_MMAP 1
#else
#include <fstream>
/// 1 where files are mapped with mmap(2) (POSIX); 0 where they are read with a seek and a read.
#define AWQ_HAVE_MMAP 0
#endif
