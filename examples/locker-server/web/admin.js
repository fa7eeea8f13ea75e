/* placeholder: admin.js */
