// octet::Error -> Python exceptions carrying octet's message unchanged:
//   octet.Error(RuntimeError)               every failure of the library (CUDA, files, state)
//   octet.ValueError(octet.Error, ValueError) a bad argument: octet's messages of the form
//                                           "<op>: argument '<arg>': expected <what>, got <what>"
//   octet.TypeError(octet.Error, TypeError)  an object the binding cannot take as an array
// The library has one C++ error type; the argument form is its documented message convention
// (octet/error.hpp), so the class follows from the message, never from the op.
#include "python/src/binding.hpp"
#include "python/src/errors.hpp"

#include <cstring>

namespace octet::python {

namespace {
PyObject* error_class = nullptr;
PyObject* value_error_class = nullptr;
PyObject* type_error_class = nullptr;

bool is_argument_error(const char* message) { return std::strstr(message, ": argument '") != nullptr; }
}  // namespace

void bind_errors(nb::module_& m) {
  error_class = PyErr_NewExceptionWithDoc("octet.Error", "A failure reported by the octet library.",
                                          PyExc_RuntimeError, nullptr);
  nb::object value_bases = nb::make_tuple(nb::handle(error_class), nb::handle(PyExc_ValueError));
  value_error_class = PyErr_NewExceptionWithDoc("octet.ValueError", "An argument octet refused.",
                                                value_bases.ptr(), nullptr);
  nb::object type_bases = nb::make_tuple(nb::handle(error_class), nb::handle(PyExc_TypeError));
  type_error_class = PyErr_NewExceptionWithDoc("octet.TypeError", "An object octet cannot take as an array.",
                                               type_bases.ptr(), nullptr);
  m.attr("Error") = nb::handle(error_class);
  m.attr("ValueError") = nb::handle(value_error_class);
  m.attr("TypeError") = nb::handle(type_error_class);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const ArrayTypeError& e) {
      PyErr_SetString(type_error_class, e.what());
    } catch (const Error& e) {
      PyErr_SetString(is_argument_error(e.what()) ? value_error_class : error_class, e.what());
    }
  });
}

}  // namespace octet::python
